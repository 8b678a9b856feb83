# swarmlet/busybox:1 -- Debian's static busybox on an empty base: sh, sleep, nc, wget, httpd...
# Built by stacks/build-images.sh (no registry needed); the context holds the `busybox` binary.
# `busybox --install -s` needs no shell: the RUN below is exec-form and runs the copied binary.
FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox", "sh", "-c", "/bin/busybox mkdir -p /usr/bin /sbin /usr/sbin /tmp /etc /root /www && /bin/busybox --install -s && chmod 1777 /tmp && printf 'root:x:0:0:root:/root:/bin/sh\\nnobody:x:65534:65534:nobody:/:/bin/false\\n' > /etc/passwd && printf 'root:x:0:\\nnogroup:x:65534:\\n' > /etc/group"]
CMD ["sh"]
