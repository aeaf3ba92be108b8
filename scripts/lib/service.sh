# Shared by scripts/label_studio.sh and scripts/mlflow_server.sh: a server started in its own
# process group, tracked by a pid file, waited for until it answers, stopped as a group.
# The caller sets NAME, PIDFILE, LOG, TIMEOUT and defines say() and answers().

running() {
    [[ -f "$PIDFILE" ]] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null
}

# Wait until answers() succeeds; give up (and stop the server) when it exits or TIMEOUT passes.
wait_until_up() {
    local waited=0
    until answers; do
        if ! running; then
            say "$NAME exited during start; last log lines:"
            tail -n 30 "$LOG" >&2
            rm -f "$PIDFILE"
            exit 1
        fi
        if ((waited >= TIMEOUT)); then
            say "$NAME did not answer within ${TIMEOUT}s; see $LOG"
            stop
            exit 1
        fi
        sleep 1
        waited=$((waited + 1))
    done
    say "up after ${waited}s"
}

stop() {
    if ! running; then
        rm -f "$PIDFILE"
        say "not running (data dir $DATA)"
        return
    fi
    local pid
    pid=$(cat "$PIDFILE")
    # setsid made the server the leader of its own process group: stop that group only.
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid"
    for _ in $(seq 1 100); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid"
    fi
    rm -f "$PIDFILE"
    say "stopped (pid $pid)"
}
