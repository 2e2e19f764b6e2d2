# syntax=docker/dockerfile:1
#
# facteur as a container: a static binary on a distroless base, running as
# the unprivileged user 65532. It listens on high ports (2525, 2587, 2465,
# 8080); compose.yaml publishes them as 25, 587, 465 and 8080, so the process
# needs no CAP_NET_BIND_SERVICE.

FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/facteur ./cmd/facteur
# The mount points of the spool and mail volumes: a new named volume takes
# its owner and mode from them, so it starts writable by the runtime user.
RUN mkdir -p /out/spool /out/mail

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/facteur /usr/local/bin/facteur
COPY --from=build --chown=65532:65532 --chmod=0700 /out/spool /var/spool/facteur
COPY --from=build --chown=65532:65532 --chmod=0700 /out/mail /var/mail/vhosts
USER 65532:65532
EXPOSE 2525 2587 2465 8080
ENTRYPOINT ["/usr/local/bin/facteur"]
CMD ["serve"]
