# Shell helpers the load scripts share (sourced by compare_api.sh and pair_load.sh).

# A free TCP port on the loopback interface.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Waits up to 60 s for URL to answer; fails saying so.
wait_up() {
    for _ in $(seq 600); do
        curl -sf "$1" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    echo "no answer from $1" >&2; return 1
}
