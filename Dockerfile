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
RUN cargo pgrx package --pg-config /usr/lib/postgresql/15/bin/pg_config \
    && tests/scripts/check-symbols.sh

FROM debian:12
RUN apt-get update && apt-get install -y --no-install-recommends \
        postgresql-15 postgresql-contrib postgresql-15-hypopg postgresql-15-cron \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/optidb-pg15/usr/ /usr/
RUN echo "shared_preload_libraries = 'pg_stat_statements'" \
        >> /usr/share/postgresql/postgresql.conf.sample
USER postgres
ENV PGDATA=/var/lib/postgresql/data
# Local connections only (use `docker exec -it <container> psql`); open it up deliberately.
RUN /usr/lib/postgresql/15/bin/initdb -D "$PGDATA" -A peer \
    && echo "listen_addresses = 'localhost'" >> "$PGDATA/postgresql.conf"
CMD ["/usr/lib/postgresql/15/bin/postgres", "-D", "/var/lib/postgresql/data"]
