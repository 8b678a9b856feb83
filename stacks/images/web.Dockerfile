# swarmlet/web:N -- answers every GET with "<BODY_PREFIX><name>\n", where name is $NAME or the
# container's hostname (the container id prefix unless a hostname is set). Starts in milliseconds.
# No HEALTHCHECK on purpose: services declare their own.
FROM swarmlet/busybox:1
ARG BODY_PREFIX=""
COPY web-start.sh /bin/web-start
COPY httpd.conf /etc/httpd.conf
RUN ["/bin/sh", "-c", "chmod 755 /bin/web-start && printf '%s' \"$BODY_PREFIX\" > /etc/web-body-prefix"]
EXPOSE 80
ENTRYPOINT ["/bin/web-start"]
