#!/usr/bin/env bash
# Entrypoint of the Spark driver and executor pods that spark-submit --deploy-mode cluster
# creates from the labelfree-spark image. Spark's Kubernetes backend starts the container
# with "driver" or "executor" as the first argument and describes the rest in environment
# variables it sets on the pod (SPARK_DRIVER_URL, SPARK_EXECUTOR_ID, ...). pip's pyspark has
# no such script, so the image carries this one. Any other command runs as given.
set -euo pipefail

SPARK_HOME="${SPARK_HOME:-$(python -c 'import os, pyspark; print(os.path.dirname(pyspark.__file__))')}"
export SPARK_HOME
CONF_DIR="${SPARK_CONF_DIR:-$SPARK_HOME/conf}"

case "${1:-}" in
  driver)
    shift
    # Cluster mode ends here in client mode: the driver runs in this pod, bound to its IP.
    exec "$SPARK_HOME/bin/spark-submit" \
      --conf "spark.driver.bindAddress=${SPARK_DRIVER_BIND_ADDRESS}" \
      --conf "spark.executorEnv.SPARK_DRIVER_POD_IP=${SPARK_DRIVER_BIND_ADDRESS}" \
      --deploy-mode client \
      "$@"
    ;;
  executor)
    shift
    # Spark passes JVM options as SPARK_JAVA_OPT_0, _1, ... in order; keep that order.
    mapfile -t java_opts < <(env | grep '^SPARK_JAVA_OPT_' | sort -t_ -k4 -n | sed 's/^[^=]*=//')
    exec java "${java_opts[@]}" \
      -Xms"${SPARK_EXECUTOR_MEMORY}" -Xmx"${SPARK_EXECUTOR_MEMORY}" \
      -cp "${CONF_DIR}:${SPARK_HOME}/jars/*${SPARK_CLASSPATH:+:$SPARK_CLASSPATH}" \
      org.apache.spark.scheduler.cluster.k8s.KubernetesExecutorBackend \
      --driver-url "${SPARK_DRIVER_URL}" \
      --executor-id "${SPARK_EXECUTOR_ID}" \
      --cores "${SPARK_EXECUTOR_CORES}" \
      --app-id "${SPARK_APPLICATION_ID}" \
      --hostname "${SPARK_EXECUTOR_POD_IP}" \
      --resourceProfileId "${SPARK_RESOURCE_PROFILE_ID}" \
      --podName "${SPARK_EXECUTOR_POD_NAME}" \
      "$@"
    ;;
  *)
    exec "$@"
    ;;
esac
