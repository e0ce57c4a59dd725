# PID 1 of tester/spring: after LISTEN_AFTER seconds it serves /www on :8080, whose
# /actuator/health says {"status":"DOWN"} until UP_AFTER more seconds have passed (never when
# NEVER_UP is set), then {"status":"UP"}; /tmp/ready exists from then on.
trap 'exit 0' TERM INT
b=/bin/busybox
$b mkdir -p /www/actuator /tmp
echo '{"status":"DOWN"}' >/www/actuator/health
$b sleep "${LISTEN_AFTER:-2}" & wait $!
$b httpd -p 8080 -h /www
echo "spring: listening on :8080, starting"
if [ -z "$NEVER_UP" ]; then
    $b sleep "${UP_AFTER:-3}" & wait $!
    echo '{"status":"UP"}' >/www/actuator/health
    $b touch /tmp/ready
    echo "spring: started"
fi
while :; do $b sleep 3600 & wait $!; done
