# syntax=docker/dockerfile:1
# Multi-stage: build with the Rust toolchain, run on distroless as a non-root user.
#   docker build -t gatehouse .
#   docker build --build-arg FEATURES=otel -t gatehouse:otel .   # with OpenTelemetry trace export
FROM rust:1-bookworm AS build
ARG FEATURES=""
WORKDIR /src
COPY . .
# Cache mounts keep the registry and build artifacts between builds.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin gatehouse --features "$FEATURES" \
 && install -D target/release/gatehouse /out/gatehouse \
 && install -d -o 65532 -g 65532 /out/data

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/gatehouse /usr/local/bin/gatehouse
COPY --from=build --chown=65532:65532 /out/data /data
COPY policy.toml /etc/gatehouse/policy.toml
USER 65532:65532
WORKDIR /data
ENV DATABASE_URL=sqlite:///data/gatehouse.db \
    GATEHOUSE_GRPC_ADDR=0.0.0.0:9191 \
    GATEHOUSE_HTTP_ADDR=0.0.0.0:8080 \
    GATEHOUSE_LOG_FORMAT=json
EXPOSE 9191 8080
ENTRYPOINT ["/usr/local/bin/gatehouse"]
CMD ["serve"]
