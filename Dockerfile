# PostgreSQL 15 from Debian with pg_stat_statements, optidb and pg_cron preloaded and hypopg
# installed, in the cluster the container starts (docker/entrypoint.sh creates it on first start).
#
# optidb comes from the Debian package that tests/scripts/package.sh builds on a Debian 12 host
# (target/optidb-postgresql-15_<version>_amd64.deb): the image build needs only the Debian
# archive, no Rust toolchain and no installer download, and the image holds exactly the package
# the suite tests with dpkg. Build and run (README "Docker", docs/install.md):
#   bash tests/scripts/package.sh && docker build -t optidb .
#   docker run -d --name optidb -e POSTGRES_PASSWORD=... -p 5432:5432 optidb
# The suite builds and runs it offline from a locally made base image: tests/scripts/docker-test.sh.
FROM debian:bookworm

ENV LANG=C.UTF-8 PGDATA=/var/lib/postgresql/data PGPORT=5432
# Debian's packages would create and start a cluster "main" of their own: not in this image.
RUN mkdir -p /etc/postgresql-common/createcluster.d \
    && echo 'create_main_cluster = false' >/etc/postgresql-common/createcluster.d/no-main.conf \
    && apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        postgresql-15 postgresql-15-hypopg postgresql-15-cron \
    && rm -rf /var/lib/apt/lists/*

# The newest optidb package in target/ (.dockerignore sends nothing else of the tree).
COPY target/optidb-postgresql-15_*_amd64.deb /tmp/optidb/
RUN deb=$(ls /tmp/optidb/*.deb | sort -V | tail -1) \
    && echo "installing $deb" \
    && apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$deb" \
    && rm -rf /tmp/optidb /var/lib/apt/lists/* \
    && install -d -o postgres -g postgres -m 2775 /var/run/postgresql \
    && install -d -o postgres -g postgres -m 700 "$PGDATA"

COPY docker/entrypoint.sh /usr/local/bin/optidb-entrypoint
USER postgres
VOLUME /var/lib/postgresql/data
EXPOSE 5432
# SIGINT: PostgreSQL's fast shutdown (SIGTERM would wait for every client to leave).
STOPSIGNAL SIGINT
ENTRYPOINT ["/usr/local/bin/optidb-entrypoint"]
