# PostgreSQL 15 with pg_stat_statements, hypopg, pg_cron and optidb preloaded.
# Not built on the development machines (no Docker engine there): reviewed, not tested.
FROM debian:12 AS build
RUN apt-get update && apt-get install -y --no-install-recommends \
        postgresql-15 postgresql-server-dev-15 clang libclang-dev binutils \
        build-essential ca-certificates curl pkg-config \
    && rm -rf /var/lib/apt/lists/*
RUN curl -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal --default-toolchain 1.95.0
ENV PATH=/root/.cargo/bin:$PATH
RUN cargo install cargo-pgrx --version 0.18.0 --locked \
    && cargo pgrx init --pg15 /usr/lib/postgresql/15/bin/pg_config
WORKDIR /src
COPY . .
# The same Debian package the test suite installs (release build, upgrade scripts).
RUN bash tests/scripts/package.sh

FROM debian:12
RUN apt-get update && apt-get install -y --no-install-recommends \
        postgresql-15 postgresql-contrib postgresql-15-hypopg postgresql-15-cron \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/optidb-postgresql-15_*_amd64.deb /tmp/
RUN dpkg -i /tmp/optidb-postgresql-15_*_amd64.deb && rm /tmp/optidb-postgresql-15_*_amd64.deb \
    && echo "shared_preload_libraries = 'pg_stat_statements,optidb,pg_cron'" \
        >> /usr/share/postgresql/postgresql.conf.sample
USER postgres
ENV PGDATA=/var/lib/postgresql/data
# Local connections only (use `docker exec -it <container> psql`); open it up deliberately.
# optidb's hooks record every statement; its worker snapshots, records health and evaluates the
# alert rules in database postgres, where the extensions are created at build time.
RUN /usr/lib/postgresql/15/bin/initdb -D "$PGDATA" -A peer \
    && printf "%s\n" "listen_addresses = 'localhost'" "optidb.database = 'postgres'" \
        "cron.database_name = 'postgres'" >> "$PGDATA/postgresql.conf" \
    && /usr/lib/postgresql/15/bin/pg_ctl -D "$PGDATA" -w start \
    && psql -d postgres -c "CREATE EXTENSION pg_stat_statements" -c "CREATE EXTENSION hypopg" \
        -c "CREATE EXTENSION optidb" \
    && /usr/lib/postgresql/15/bin/pg_ctl -D "$PGDATA" -w stop
CMD ["/usr/lib/postgresql/15/bin/postgres", "-D", "/var/lib/postgresql/data"]
