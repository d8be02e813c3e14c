#!/bin/bash
# The README on a plain Debian 12, command by command, as a new user would type them (issue 19).
#
#   sudo tests/debian12/walkthrough.sh [ROOT] [install|run|cli|test|all]
#
# Needs root, debootstrap (apt-get install debootstrap) and Debian's mirror plus PyPI. It makes a minimal Debian 12
# (bookworm) in ROOT (default /var/tmp/stylize-debian12), adds what the README asks a user to have (python3-venv,
# git, make; curl for the HTTP example) and a user with sudo, clones this checkout's committed HEAD into that
# user's home, and runs the README's commands there without ../shared/weights (so animeganv2 builds untrained, as
# on any machine outside this project's) and without this machine's local torch wheel (so pip takes PyPI's
# default torch, the CUDA build). Each step's output: ROOT/home/newuser/walk/<step>.log; one line per step (exit
# status, seconds) in ROOT/home/newuser/walk/summary.txt. Not part of `make test`: it takes root, a network and
# about 35 minutes (`test` alone is the whole suite).
set -euo pipefail
ROOT=${1:-/var/tmp/stylize-debian12}
WHAT=${2:-all}
SRC=$(git -C "$(dirname "$0")" rev-parse --show-toplevel)
U=newuser

setup() {
  if [ ! -x "$ROOT/usr/bin/apt-get" ]; then
    debootstrap --variant=minbase bookworm "$ROOT" http://deb.debian.org/debian
  fi
  for d in proc sys dev dev/shm srv/stylize; do mkdir -p "$ROOT/$d"; done
  mountpoint -q "$ROOT/proc" || mount -t proc proc "$ROOT/proc"
  mountpoint -q "$ROOT/sys" || mount --rbind /sys "$ROOT/sys"
  mountpoint -q "$ROOT/dev" || mount --rbind /dev "$ROOT/dev"
  mountpoint -q "$ROOT/dev/shm" || mount -t tmpfs -o size=8g tmpfs "$ROOT/dev/shm"
  mountpoint -q "$ROOT/srv/stylize" || mount --bind -o ro "$SRC" "$ROOT/srv/stylize"
  cp /etc/resolv.conf "$ROOT/etc/resolv.conf"
  grep -q "$(hostname)" "$ROOT/etc/hosts" || echo "127.0.1.1 $(hostname)" >> "$ROOT/etc/hosts"
  # A network that intercepts TLS (this project's machines do) needs its CA, as any machine on it would
  if ls /usr/local/share/ca-certificates/*.crt >/dev/null 2>&1; then
    cp /usr/local/share/ca-certificates/*.crt "$ROOT/usr/local/share/ca-certificates/"
    printf '[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n' > "$ROOT/etc/pip.conf"
  fi
  chroot "$ROOT" bash -c "export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq sudo python3 python3-venv git make ca-certificates curl >/dev/null
    update-ca-certificates >/dev/null
    id $U >/dev/null 2>&1 || { useradd -m -s /bin/bash $U && echo '$U ALL=(ALL) NOPASSWD:ALL' > /etc/sudoers.d/$U; }"
  chroot "$ROOT" su - $U -c "git config --global --add safe.directory '*'
    [ -d stylize ] || git clone -q /srv/stylize stylize; cd stylize && git pull -q && git log --oneline -1; mkdir -p ~/walk"
}

as_user() { chroot "$ROOT" su - $U -c "cd stylize && $1"; }

step() {  # step NAME TIMEOUT COMMAND: runs COMMAND as the user in the clone, logs it, records status and time
  local name=$1 t=$2 cmd=$3 t0 rc
  t0=$(date +%s)
  set +e
  chroot "$ROOT" su - $U -c "cd stylize && timeout -s INT $t bash -c $(printf '%q' "$cmd")" \
    > "$ROOT/home/$U/walk/$name.log" 2>&1
  rc=$?
  set -e
  echo "$(date -u +%H:%M:%S) $name rc=$rc $(( $(date +%s) - t0 ))s" | tee -a "$ROOT/home/$U/walk/summary.txt"
}

S=.venv/bin/stylize
run_page() {  # make run: wait for the page, ask it for the models, then Ctrl-C
  as_user "(setsid make run > ~/walk/make_run.log 2>&1 & echo \$! > ~/walk/make_run.pid)"
  for _ in $(seq 1 240); do grep -q "Ctrl-C stops both" "$ROOT/home/$U/walk/make_run.log" && break; sleep 5; done
  step page 30 "curl -sf http://127.0.0.1:8080/ | grep -o '<title>.*</title>' && curl -sf http://127.0.0.1:8080/api/models | head -c 300"
  as_user 'kill -INT -- -$(cat ~/walk/make_run.pid)'; sleep 15
  step run_stopped 10 "! pgrep -u $U tritonserver"
}

cli() {  # the README's "Using it", the HTTP example, the load test and the deploy check
  step demo 900 "make demo"
  step photos 60 ".venv/bin/python -c \"
from skimage import data; from PIL import Image; import os
os.makedirs('photos', exist_ok=True)
Image.fromarray(data.chelsea()).save('photos/chelsea.png'); Image.fromarray(data.coffee()[::4, ::4]).save('photos/coffee.jpg')
Image.fromarray(data.astronaut()[::4, ::4]).save('photo.png')\" && ffmpeg -loglevel error -y -loop 1 -i photo.png -f lavfi -i sine=frequency=440:duration=2 -vf scale=96:64,format=yuv420p -r 5 -t 2 -c:v libx264 -c:a aac -shortest clip.mkv && cp clip.mkv clip.mp4"
  as_user "(setsid $S serve > ~/walk/serve.log 2>&1 & echo \$! > ~/walk/serve.pid)"
  step serve_ready 600 "until $S health >/dev/null 2>&1; do sleep 5; done"
  step models 60 "$S models"
  step health 60 "$S health"
  step infer 600 "$S infer photos/ -m animeganv2 -o out/ --side-by-side && ls -l out/"
  step infer_ext_auto 600 "$S infer photos/ -m animevideo_x2 -o out_auto/ --ext auto && ls -l out_auto/"
  step video 600 "$S video clip.mkv -o clip_x2.mkv -m animevideo_x2"
  step live 600 "ffmpeg -loglevel error -re -i clip.mp4 -c copy -f mpegts - | $S video --live - -o live.ts -m animevideo_x2 --report live.json --plot live.png"
  # the README's curl example, extracted from README.md itself (the block that starts with IMG=)
  step http_curl 120 "awk '/^IMG=photo.png/{f=1} f{print} /^tail -c/{exit}' README.md > /tmp/http_example.sh && bash /tmp/http_example.sh && .venv/bin/python -c \"from PIL import Image; print(Image.open('photo_x2.png').size)\""
  as_user 'kill -INT -- -$(cat ~/walk/serve.pid)'; sleep 15
  step serve_stopped 10 "! pgrep -u $U tritonserver"
  step loadtest 900 "$S loadtest --quick --serve"
  step kustomize 60 "mkdir -p ../stylize-mine && printf 'resources: [../stylize/k8s/overlays/cpu]\nimages: [{name: localhost:5000/stylize-triton, newName: REGISTRY/stylize-triton, newTag: 0.1.0-triton24.10-cpu}]\n' > ../stylize-mine/kustomization.yaml && .venv/bin/kubectl kustomize ../stylize-mine | grep image:"
}

setup
case "$WHAT" in
  install) step make_install 1800 "make install" ;;
  run) run_page ;;
  cli) cli ;;
  test) step make_test 5400 "make test" ;;
  all) step make_install 1800 "make install"; run_page; cli; step make_test 5400 "make test" ;;
esac
