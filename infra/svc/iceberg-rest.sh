# Iceberg REST catalog: Apache Iceberg's own REST catalog server
# (org.apache.iceberg.rest.RESTCatalogServer from iceberg-open-api's test-fixtures jar, the server
# the apache/iceberg-rest-fixture image runs), resolved from Maven Central with the classpath that
# image bundles: iceberg-core (+ its test jar, which holds RESTCatalogAdapter and the servlet),
# iceberg-aws with Iceberg's shaded AWS SDK bundle (S3FileIO), Jetty 11, SQLite JDBC, and
# Hadoop's shaded client (the server builds a Hadoop Configuration). Sourced by infra/services.sh.
#
# Backend: Iceberg's JDBC catalog on a SQLite file in the run folder (the fixture's default is an
# in-memory database, lost on restart); table data and metadata in the SeaweedFS bucket through
# S3FileIO. The server reads CATALOG_* variables as catalog properties (CATALOG_S3_ENDPOINT ->
# s3.endpoint, CATALOG_IO__IMPL -> io-impl, CATALOG_REST_PORT -> rest.port, its port).

iceberg-rest_home() { echo "$CACHE/iceberg-rest/$ICEBERG_REST_VERSION"; }
iceberg-rest_port() { echo "$ICEBERG_REST_PORT"; }
iceberg-rest_ports() { echo "$ICEBERG_REST_PORT"; }
iceberg-rest_logs() { echo "$RUN/iceberg-rest/server.log"; }
iceberg-rest_info() { echo "uri=http://$HOST:$ICEBERG_REST_PORT warehouse=$ICEBERG_REST_WAREHOUSE version=$ICEBERG_REST_VERSION"; }

iceberg-rest_fetch() {
  local dest; dest="$(iceberg-rest_home)"
  if is_complete "$dest"; then log "iceberg-rest $ICEBERG_REST_VERSION: cached at $dest"; return 0; fi
  local t0; t0="$(now)"
  mkdir -p "$CACHE"
  local tmp; tmp="$(mktemp -d "$CACHE/.iceberg-rest.XXXXXX")"
  local v="$ICEBERG_REST_VERSION"
  cat >"$tmp/pom.xml" <<EOF
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>whylake.infra</groupId><artifactId>iceberg-rest</artifactId><version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>org.apache.iceberg</groupId><artifactId>iceberg-open-api</artifactId><version>$v</version><classifier>test-fixtures</classifier></dependency>
    <dependency><groupId>org.apache.iceberg</groupId><artifactId>iceberg-core</artifactId><version>$v</version></dependency>
    <dependency><groupId>org.apache.iceberg</groupId><artifactId>iceberg-core</artifactId><version>$v</version><classifier>tests</classifier></dependency>
    <dependency><groupId>org.apache.iceberg</groupId><artifactId>iceberg-aws</artifactId><version>$v</version></dependency>
    <dependency><groupId>org.apache.iceberg</groupId><artifactId>iceberg-aws-bundle</artifactId><version>$v</version></dependency>
    <dependency><groupId>org.eclipse.jetty</groupId><artifactId>jetty-servlet</artifactId><version>$ICEBERG_REST_JETTY_VERSION</version></dependency>
    <dependency><groupId>org.xerial</groupId><artifactId>sqlite-jdbc</artifactId><version>$ICEBERG_REST_SQLITE_VERSION</version></dependency>
    <dependency><groupId>org.apache.hadoop</groupId><artifactId>hadoop-client-api</artifactId><version>$ICEBERG_REST_HADOOP_VERSION</version></dependency>
    <dependency><groupId>org.apache.hadoop</groupId><artifactId>hadoop-client-runtime</artifactId><version>$ICEBERG_REST_HADOOP_VERSION</version></dependency>
    <dependency><groupId>org.slf4j</groupId><artifactId>slf4j-simple</artifactId><version>$ICEBERG_REST_SLF4J_VERSION</version></dependency>
  </dependencies>
</project>
EOF
  log "iceberg-rest: resolving org.apache.iceberg:iceberg-open-api:$v:test-fixtures + the fixture's classpath from Maven Central"
  mvn_copy_deps "$tmp/pom.xml" "$tmp/libs"
  ls "$tmp/libs/iceberg-open-api-$v-test-fixtures.jar" >/dev/null || die "iceberg-rest: fixture jar missing after maven"
  log "iceberg-rest: $(ls "$tmp/libs" | wc -l) jars, $(size_of "$tmp/libs")"
  rm -rf "$dest"; mkdir -p "$(dirname "$dest")"
  mv "$tmp" "$dest"
  mark_complete "$dest"
  report_fetch "iceberg-rest $v" "$t0" "$dest"
}

iceberg-rest_start() {
  require_java 17 "Iceberg REST catalog $ICEBERG_REST_VERSION"
  need_cmd curl "the health check uses curl: apt-get install curl"
  local run="$RUN/iceberg-rest" home; home="$(iceberg-rest_home)"
  mkdir -p "$run"
  # shellcheck disable=SC2086
  (
    cd "$run" || exit 1
    # The server reads its port from the rest.port property (CATALOG_REST_PORT), not REST_PORT;
    # it binds with SO_REUSEPORT, so start_service's free-port check is what keeps two apart.
    export CATALOG_REST_PORT="$ICEBERG_REST_PORT"
    export CATALOG_URI="jdbc:sqlite:file:$run/catalog.db"
    export CATALOG_JDBC_USER=whylake CATALOG_JDBC_PASSWORD=whylake
    export CATALOG_WAREHOUSE="$ICEBERG_REST_WAREHOUSE"
    export CATALOG_IO__IMPL=org.apache.iceberg.aws.s3.S3FileIO
    export CATALOG_S3_ENDPOINT="http://$HOST:$SEAWEEDFS_S3_PORT"
    export CATALOG_S3_PATH__STYLE__ACCESS=true
    export CATALOG_S3_ACCESS__KEY__ID="$SEAWEEDFS_ACCESS_KEY" CATALOG_S3_SECRET__ACCESS__KEY="$SEAWEEDFS_SECRET_KEY"
    export CATALOG_CLIENT_REGION=us-east-1 AWS_REGION=us-east-1
    start_daemon iceberg-rest "$run/server.log" "$(java_home)/bin/java" $ICEBERG_REST_HEAP \
      -Djava.awt.headless=true -cp "$home/libs/*" org.apache.iceberg.rest.RESTCatalogServer
  )
}

iceberg-rest_health() {
  curl -fsS -m 5 "http://$HOST:$ICEBERG_REST_PORT/v1/config" >/dev/null
}
