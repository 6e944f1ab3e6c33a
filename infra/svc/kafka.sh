# Kafka: one KRaft node (broker + controller) on 127.0.0.1, from the released jars on Maven
# Central (org.apache.kafka:kafka_<scala> + dependencies, kafka-tools for the admin CLIs, and
# log4j-slf4j-impl so the broker's slf4j logging reaches log4j2). Sourced by infra/services.sh.

kafka_home() { echo "$CACHE/kafka/kafka_$KAFKA_SCALA_VERSION-$KAFKA_VERSION"; }
kafka_port() { echo "$KAFKA_PORT"; }
kafka_ports() { echo "$KAFKA_PORT $KAFKA_CONTROLLER_PORT"; }
kafka_logs() { echo "$RUN/kafka/server.log $RUN/kafka/format.log"; }
kafka_info() { echo "bootstrap=$HOST:$KAFKA_PORT version=$KAFKA_VERSION"; }

kafka_fetch() {
  local dest; dest="$(kafka_home)"
  if is_complete "$dest"; then log "kafka $KAFKA_VERSION: cached at $dest"; return 0; fi
  local t0; t0="$(now)"
  mkdir -p "$CACHE"
  local tmp; tmp="$(mktemp -d "$CACHE/.kafka.XXXXXX")"
  cat >"$tmp/pom.xml" <<EOF
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>whylake.infra</groupId><artifactId>kafka-broker</artifactId><version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_$KAFKA_SCALA_VERSION</artifactId><version>$KAFKA_VERSION</version></dependency>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka-tools</artifactId><version>$KAFKA_VERSION</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j-impl</artifactId><version>$KAFKA_LOG4J_VERSION</version></dependency>
  </dependencies>
</project>
EOF
  log "kafka: resolving org.apache.kafka:kafka_$KAFKA_SCALA_VERSION:$KAFKA_VERSION + dependencies from Maven Central"
  mvn_copy_deps "$tmp/pom.xml" "$tmp/libs"
  ls "$tmp/libs/kafka_$KAFKA_SCALA_VERSION-$KAFKA_VERSION.jar" >/dev/null || die "kafka: broker jar missing after maven"
  log "kafka: $(ls "$tmp/libs" | wc -l) jars, $(size_of "$tmp/libs")"
  rm -rf "$dest"; mkdir -p "$(dirname "$dest")"
  mv "$tmp" "$dest"
  mark_complete "$dest"
  report_fetch "kafka $KAFKA_VERSION" "$t0" "$dest"
}

# Main classes moved between releases (3.x: kafka.tools.StorageTool in core; later ones may move
# it to org.apache.kafka.tools): find the one present in the jars.
kafka_storage_tool_class() {
  need_cmd unzip "apt-get install unzip"
  local home c j; home="$(kafka_home)"
  for c in kafka.tools.StorageTool org.apache.kafka.tools.StorageTool; do
    for j in "$home"/libs/kafka_*.jar "$home"/libs/kafka-tools-*.jar "$home"/libs/kafka-storage-*.jar; do
      [[ -f "$j" ]] || continue
      if unzip -l "$j" "${c//.//}.class" >/dev/null 2>&1; then echo "$c"; return 0; fi
    done
  done
  die "kafka: no StorageTool main class in $home/libs"
}

kafka_java() {  # kafka_java <main class> <args...>: the classpath and JVM flags of kafka-run-class.sh
  local home; home="$(kafka_home)"
  "$(java_home)/bin/java" -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35 \
    -XX:+ExplicitGCInvokesConcurrent -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$RUN/kafka/log4j2.properties" \
    -cp "$home/libs/*" "$@"
}

kafka_start() {
  require_java 17 "Kafka $KAFKA_VERSION"
  local run="$RUN/kafka"
  mkdir -p "$run/data"
  cat >"$run/server.properties" <<EOF
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@$HOST:$KAFKA_CONTROLLER_PORT
listeners=PLAINTEXT://$HOST:$KAFKA_PORT,CONTROLLER://$HOST:$KAFKA_CONTROLLER_PORT
advertised.listeners=PLAINTEXT://$HOST:$KAFKA_PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$run/data
num.partitions=1
default.replication.factor=1
auto.create.topics.enable=true
offsets.topic.replication.factor=1
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
share.coordinator.state.topic.num.partitions=1
group.initial.rebalance.delay.ms=0
log.retention.hours=24
EOF
  cat >"$run/log4j2.properties" <<'EOF'
status = warn
appender.out.type = Console
appender.out.name = STDOUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.out.ref = STDOUT
logger.kafka.name = kafka
logger.kafka.level = INFO
logger.state.name = state.change.logger
logger.state.level = WARN
EOF
  if [[ ! -f "$run/data/meta.properties" ]]; then
    local cls cluster_id
    cls="$(kafka_storage_tool_class)"
    cluster_id="$(kafka_java "$cls" random-uuid 2>>"$run/format.log" | tail -n 1)"
    [[ -n "$cluster_id" ]] || { show_log_tail kafka "$run/format.log"; die "kafka: $cls random-uuid failed"; }
    log "kafka: formatting $run/data (cluster id $cluster_id, $cls)"
    kafka_java "$cls" format -t "$cluster_id" -c "$run/server.properties" >>"$run/format.log" 2>&1 \
      || { show_log_tail kafka "$run/format.log"; die "kafka: formatting the log dir failed"; }
  fi
  # shellcheck disable=SC2086
  start_daemon kafka "$run/server.log" "$(java_home)/bin/java" $KAFKA_HEAP \
    -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35 \
    -XX:+ExplicitGCInvokesConcurrent -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$run/log4j2.properties" \
    -cp "$(kafka_home)/libs/*" kafka.Kafka "$run/server.properties"
}

# healthy = the broker answers metadata and a topic can be created and listed
KAFKA_HEALTH_TOPIC=whylake-infra-health
kafka_health() {
  port_open "$KAFKA_PORT" || return 1
  local py; py="$(python_bin)"
  if [[ -n "$py" ]] && "$py" -c 'import confluent_kafka' 2>/dev/null; then
    "$py" "$INFRA_DIR/kafka_check.py" --bootstrap "$HOST:$KAFKA_PORT" --topic "$KAFKA_HEALTH_TOPIC"
  else  # no Python client: the Java admin CLI (a JVM start per call, ~3 s)
    kafka_java org.apache.kafka.tools.TopicCommand --bootstrap-server "$HOST:$KAFKA_PORT" \
      --create --if-not-exists --topic "$KAFKA_HEALTH_TOPIC" --partitions 1 --replication-factor 1 >/dev/null 2>&1 \
      && kafka_java org.apache.kafka.tools.TopicCommand --bootstrap-server "$HOST:$KAFKA_PORT" --list 2>/dev/null \
        | grep -qx "$KAFKA_HEALTH_TOPIC"
  fi
}
