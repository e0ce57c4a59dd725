#!/bin/sh
# PID 1 of tester/web: serves /www on :8080 (/health, /version, /cgi-bin/env). A shell that exits on
# TERM stays PID 1, because a bare httpd as PID 1 ignores TERM and every `docker stop` would wait 10 s.
trap 'exit 0' TERM INT
echo "web: version $(cat /www/version) listening on :8080"
httpd -f -p 8080 -h /www &
wait
