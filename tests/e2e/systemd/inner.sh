#!/bin/bash
# PID 1 of a private PID, mount, UTS and cgroup namespace: readies the mounts and becomes
# a real systemd that sees only the units in $1/units. Started by the harness
# (`natgw_e2e::systemd::Manager::boot`), never by hand.
set -e
DIR=$1
# A cgroup2 of our own subtree (the cgroup namespace hides the host's hierarchies).
mount -t cgroup2 -o nosuid,nodev,noexec cgroup2 /sys/fs/cgroup
# Wait until the harness has moved unshare's parent out of this cgroup (bash builtins
# only: a forked helper would be in the cgroup itself).
for _ in $(seq 200); do
    mapfile -t P < /sys/fs/cgroup/cgroup.procs
    [ "${P[*]}" = 1 ] && break
    read -rt 0.01 <> <(:) || :
done
# systemd must not tune the host's sysctls.
mount --bind /proc/sys /proc/sys
mount -o remount,bind,ro /proc/sys
# A private /run, with the host's network namespaces in it.
exec 3</run/netns
mount -t tmpfs -o mode=755,nosuid,nodev,size=32m tmpfs /run
mkdir /run/netns
mount --no-canonicalize --rbind /proc/self/fd/3 /run/netns
exec 3<&-
for d in /usr/lib/systemd/system /usr/lib/systemd/system-generators \
         /usr/lib/systemd/system-shutdown /usr/lib/systemd/system-environment-generators \
         /etc/systemd/system; do
    [ -d "$d" ] && mount -t tmpfs -o mode=755,size=1m tmpfs "$d"
done
mount --bind "$DIR/units" /etc/systemd/system
# systemd in a container logs to "kmsg": a FIFO the harness reads.
mount --bind "$DIR/kmsg.fifo" /dev/kmsg
exec env -i container=natgw-e2e PATH=/usr/sbin:/usr/bin:/sbin:/bin \
     /lib/systemd/systemd --log-target=kmsg --log-level=info --show-status=no --unit=natgw-e2e.target
