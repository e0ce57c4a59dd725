#!/bin/sh
# PID 1 of tester/promtail. Takes promtail's flags (-config.file=PATH or -config.file PATH; the others,
# such as -config.expand-env=true, are accepted and ignored). A missing config file, or a directory in
# its place (what a bind mount of a file not yet fetched leaves), stops it as it stops promtail.
config=
while [ $# -gt 0 ]; do
    case $1 in
    -config.file=* | --config.file=*) config=${1#*=} ;;
    -config.file | --config.file) shift; config=${1-} ;;
    esac
    shift
done
if [ -z "$config" ]; then
    echo "promtail: error: -config.file is required" >&2
    exit 1
fi
if [ -d "$config" ]; then
    echo "promtail: error loading config file $config: read $config: is a directory" >&2
    exit 1
fi
if [ ! -f "$config" ]; then
    echo "promtail: error loading config file $config: open $config: no such file or directory" >&2
    exit 1
fi
trap 'exit 0' TERM INT
echo "promtail: config $config loaded; serving /ready on :9080"
httpd -f -p 9080 -h /www &
wait
