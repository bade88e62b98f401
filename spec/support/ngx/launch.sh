#!/bin/sh
# Launcher of the spec's private nginx (spec/support/ngx/control.lua): becomes nginx
# (exec keeps the pid) in its own session; a watchdog stops it once process $2 (the
# test process) has exited, so a crashed spec never leaves nginx behind (0: no watchdog).
#   sh launch.sh PREFIX WATCH_PID NGINX CONF
dir=$1 watch=$2 nginx=$3 conf=$4
me=$$
echo "$me" > "$dir/launcher.pid"
alive() {
  kill -0 "$1" 2>/dev/null || return 1
  s=$(cat "/proc/$1/stat" 2>/dev/null) || return 0
  s=${s##*) }
  case $s in Z*|X*) return 1;; esac
  return 0
}
[ "$watch" = 0 ] || (
  while alive "$me"; do
    if ! alive "$watch"; then
      kill -QUIT "$me" 2>/dev/null
      i=0
      while [ $i -lt 20 ] && alive "$me"; do sleep 0.1; i=$((i + 1)); done
      kill -9 -"$me" 2>/dev/null; kill -9 "$me" 2>/dev/null
      exit 0
    fi
    sleep 0.5
  done
) </dev/null >/dev/null 2>&1 &
if command -v setsid >/dev/null 2>&1; then
  exec setsid "$nginx" -p "$dir/" -c "$conf" -e "$dir/error.log"
fi
exec "$nginx" -p "$dir/" -c "$conf" -e "$dir/error.log"
