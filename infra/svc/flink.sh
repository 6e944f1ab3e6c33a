# Flink for Beam's portable Flink runner. Sourced by infra/services.sh.
#
# Beam's Python FlinkRunner starts `java -jar <job server jar>` per pipeline (a Flink mini-cluster
# inside it with --flink_master=[local]); it looks the jar up in ~/.apache_beam/cache/jars/ as
# beam-runners-flink-<flink>-job-server-<beam>.jar and downloads it from Maven Central if absent.
# Maven Central, as served here, has no beam-runners-flink-*-job-server jar at all, so the job
# server is assembled from released jars: org.apache.beam:beam-runners-flink-<flink> (which holds
# FlinkJobServerDriver) + its dependencies + slf4j-simple, and a small launcher jar whose manifest
# names the main class and a Class-Path of those jars. `fetch flink` stages the launcher under
# Beam's own file name (with its jars beside it), so Beam finds it and never downloads.
#
# `up flink` runs the same job server long-lived on --job-port (pipelines then use
# --runner=PortableRunner --job_endpoint=localhost:<port> and skip the ~20 s JVM start).

flink_dir() { echo "$CACHE/flink/beam-runners-flink-$FLINK_MAJOR_VERSION-job-server-$BEAM_FLINK_RUNNER_VERSION"; }
flink_libname() { echo "whylake-beam-runners-flink-$FLINK_MAJOR_VERSION-$BEAM_FLINK_RUNNER_VERSION-lib"; }
flink_jar() { echo "$(flink_dir)/job-server.jar"; }
flink_beam_jar_name() { echo "beam-runners-flink-$FLINK_MAJOR_VERSION-job-server-$BEAM_PY_VERSION.jar"; }
flink_port() { echo "$FLINK_JOB_PORT"; }
flink_ports() { echo "$FLINK_JOB_PORT $FLINK_ARTIFACT_PORT $FLINK_EXPANSION_PORT"; }
flink_logs() { echo "$RUN/flink/job-server.log"; }
flink_info() {
  echo "job_endpoint=localhost:$FLINK_JOB_PORT jar=$(flink_jar) (beam-runners-flink-$FLINK_MAJOR_VERSION $BEAM_FLINK_RUNNER_VERSION)"
}

# make_launcher_jar <out.jar> <main class> <lib dir name> <title>: an empty jar whose manifest
# carries Main-Class and a relative Class-Path of every jar in <dir of out.jar>/<lib dir name>/.
make_launcher_jar() {
  local out="$1" main="$2" lib="$3" title="$4" py
  py="$(command -v python3 || python_bin)"
  [[ -n "$py" ]] || die "python3 is needed to write the launcher jar"
  "$py" - "$out" "$main" "$lib" "$title" <<'EOF'
import os, sys, zipfile
out, main, lib, title = sys.argv[1:5]
jars = sorted(f for f in os.listdir(os.path.join(os.path.dirname(out), lib)) if f.endswith(".jar"))
if not jars:
    sys.exit(f"no jars in {lib}")

def header(name, value):  # manifest lines: at most 72 bytes, continuations start with a space
    raw = f"{name}: {value}".encode()
    lines = [raw[:70]] + [b" " + raw[i:i + 69] for i in range(70, len(raw), 69)]
    return b"\r\n".join(lines) + b"\r\n"

manifest = (header("Manifest-Version", "1.0") + header("Created-By", "whylake infra/services.sh")
            + header("Implementation-Title", title) + header("Main-Class", main)
            + header("Class-Path", " ".join(f"{lib}/{j}" for j in jars)) + b"\r\n")
tmp = out + ".tmp"
with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as z:
    z.writestr("META-INF/MANIFEST.MF", manifest)
os.replace(tmp, out)
EOF
}

# stage_in_beam_cache <launcher jar> <lib dir> <beam file name>: copy the launcher under Beam's
# name and its jars (hard links when possible) into Beam's jar cache. Never replaces a jar there
# that is not ours (e.g. a real shaded job server someone downloaded).
stage_in_beam_cache() {
  local jar="$1" lib="$2" name="$3"
  local target="$BEAM_JAR_CACHE/$name" libdest; libdest="$BEAM_JAR_CACHE/$(basename "$lib")"
  mkdir -p "$BEAM_JAR_CACHE"
  if [[ -f "$target" ]] && ! cmp -s "$jar" "$target"; then
    if unzip -p "$target" META-INF/MANIFEST.MF 2>/dev/null | grep -q 'whylake infra'; then
      log "replacing an older whylake launcher at $target"
    else
      log "WARNING: $target exists and is not ours; left as is (Beam will use it)"
      return 0
    fi
  fi
  if [[ ! -f "$libdest/.complete" ]]; then
    rm -rf "$libdest.tmp"
    cp -rl "$lib" "$libdest.tmp" 2>/dev/null || { rm -rf "$libdest.tmp"; cp -r "$lib" "$libdest.tmp"; }
    rm -rf "$libdest"; mv "$libdest.tmp" "$libdest"
  fi
  if ! cmp -s "$jar" "$target" 2>/dev/null; then cp "$jar" "$target.tmp"; mv -f "$target.tmp" "$target"; fi
  log "staged for Beam: $target (+ $(basename "$lib")/)"
}

flink_fetch() {
  local dir; dir="$(flink_dir)"
  local lib; lib="$(flink_libname)"
  if ! is_complete "$dir"; then
    local t0; t0="$(now)"
    mkdir -p "$CACHE/flink"
    local tmp; tmp="$(mktemp -d "$CACHE/flink/.job-server.XXXXXX")"
    cat >"$tmp/pom.xml" <<EOF
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>whylake.infra</groupId><artifactId>flink-job-server</artifactId><version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>org.apache.beam</groupId><artifactId>beam-runners-flink-$FLINK_MAJOR_VERSION</artifactId><version>$BEAM_FLINK_RUNNER_VERSION</version></dependency>
    <dependency><groupId>org.slf4j</groupId><artifactId>slf4j-simple</artifactId><version>$FLINK_JOB_SERVER_SLF4J_VERSION</version></dependency>
  </dependencies>
</project>
EOF
    log "flink: resolving org.apache.beam:beam-runners-flink-$FLINK_MAJOR_VERSION:$BEAM_FLINK_RUNNER_VERSION + dependencies from Maven Central"
    mvn_copy_deps "$tmp/pom.xml" "$tmp/$lib"
    ls "$tmp/$lib/beam-runners-flink-$FLINK_MAJOR_VERSION"-*.jar >/dev/null 2>&1 || die "flink: runner jar missing after maven"
    log "flink: $(ls "$tmp/$lib" | wc -l) jars, $(size_of "$tmp/$lib")"
    make_launcher_jar "$tmp/job-server.jar" org.apache.beam.runners.flink.FlinkJobServerDriver "$lib" \
      "whylake infra launcher: beam-runners-flink-$FLINK_MAJOR_VERSION $BEAM_FLINK_RUNNER_VERSION job server"
    rm -rf "$dir"; mv "$tmp" "$dir"
    mark_complete "$dir"
    report_fetch "flink job server (beam-runners-flink-$FLINK_MAJOR_VERSION $BEAM_FLINK_RUNNER_VERSION)" "$t0" "$dir"
  else
    log "flink job server: cached at $dir"
  fi
  stage_in_beam_cache "$(flink_jar)" "$dir/$lib" "$(flink_beam_jar_name)"
}

flink_start() {
  require_java 11 "Beam's Flink job server"
  local run="$RUN/flink"
  mkdir -p "$run/artifacts"
  # shellcheck disable=SC2086
  start_daemon flink "$run/job-server.log" "$(java_home)/bin/java" $FLINK_HEAP -jar "$(flink_jar)" \
    --flink-master '[local]' --job-host localhost --job-port "$FLINK_JOB_PORT" \
    --artifact-port "$FLINK_ARTIFACT_PORT" --expansion-port "$FLINK_EXPANSION_PORT" \
    --artifacts-dir "$run/artifacts"
}

flink_health() {
  port_open "$FLINK_JOB_PORT" && grep -q 'JobService started on' "$RUN/flink/job-server.log" 2>/dev/null
}

# ReadFromKafka's default expansion service is org.apache.beam:beam-sdks-java-io-expansion-service
# (a shaded jar Beam looks up as beam-sdks-java-io-expansion-service-<beam>.jar). Maven Central, as
# served here, has it at no recent version (2.77.0 and 2.76.0: 404; newest listed 2.43.0), and a
# launcher jar like the Flink one would not do: Beam passes the jar as --filesToStage, so the Java
# SDK harness that runs the Kafka read would receive an empty launcher, and that harness is a
# Docker image by default (no Docker here). Not staged; see infra/README.md for the way forward.
kafka_expansion_fetch() {
  local coord="org.apache.beam:beam-sdks-java-io-expansion-service:$BEAM_PY_VERSION"
  local repo=()
  [[ -z "${WHYLAKE_MAVEN_REPO_LOCAL:-}" ]] || repo=(-Dmaven.repo.local="$WHYLAKE_MAVEN_REPO_LOCAL")
  if mvn -B -ntp -q "${repo[@]}" dependency:get -Dartifact="$coord" -Dtransitive=false >/dev/null 2>&1; then
    local jar="$HOME/.m2/repository/org/apache/beam/beam-sdks-java-io-expansion-service/$BEAM_PY_VERSION/beam-sdks-java-io-expansion-service-$BEAM_PY_VERSION.jar"
    [[ -z "${WHYLAKE_MAVEN_REPO_LOCAL:-}" ]] || jar="${jar/#$HOME\/.m2\/repository/$WHYLAKE_MAVEN_REPO_LOCAL}"
    mkdir -p "$BEAM_JAR_CACHE"
    cp "$jar" "$BEAM_JAR_CACHE/$(basename "$jar")"
    log "kafka-expansion: staged $BEAM_JAR_CACHE/$(basename "$jar")"
  else
    die "kafka-expansion: $coord is not served by Maven Central here; not staged (see infra/README.md)"
  fi
}
