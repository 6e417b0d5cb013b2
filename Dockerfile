# The SIRMS image: one static `sirms` binary FROM scratch, run as a non-root user.
#
# Run docker/build.sh first (or let it run this build): it builds the binary on the host
# (statically linked glibc, so nothing else is needed at run time) and stages it with a
# CA bundle, /etc/passwd and /etc/group, and empty data directories in docker/stage/.
# No base image is pulled, so this also builds on hosts without registry access.
#
#   docker/build.sh                       # cargo build + docker build -t sirms:latest
#   docker run --rm sirms:latest --help
FROM scratch

# Binary, CA bundle, passwd/group, nsswitch.conf: owned by root, read-only to the service.
COPY docker/stage/root/ /
# Data directory (a volume in docker-compose.yml) and /tmp, owned by the sirms user; a new
# named volume takes this ownership when first mounted.
COPY --chown=10001:10001 docker/stage/data/ /

ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
    NO_COLOR=1 \
    RUST_LOG=info
USER 10001:10001
WORKDIR /var/lib/sirms
VOLUME ["/var/lib/sirms"]
# SMTP, submission, submissions, IMAP, IMAPS, POP3, POP3S; admin API; Store gRPC.
EXPOSE 25 587 465 143 993 110 995 7500 7400 7401
ENTRYPOINT ["/usr/local/bin/sirms"]
CMD ["--help"]
