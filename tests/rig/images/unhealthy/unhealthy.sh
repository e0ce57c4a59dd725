#!/bin/sh
# PID 1 of tester/unhealthy: up and serving, but its health check always fails. Exits on TERM (see
# web.sh for why a shell stays PID 1).
trap 'exit 0' TERM INT
echo "health: backend not ready"
httpd -f -p 8080 -h /www &
wait
