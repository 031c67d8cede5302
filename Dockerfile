# syntax=docker/dockerfile:1
# The operator image: a release build of the operator binary on distroless (glibc, CA
# certificates, no shell), running as the distroless "nonroot" user (65532).
#
#   docker build -t ghcr.io/acs-identity-operator/acs-identity-operator:dev .
#   docker build --target emulator -t ghcr.io/acs-identity-operator/acs-emulator:dev .

# Bookworm, so the binary's glibc matches distroless' debian12.
FROM rust:1-bookworm AS builder
WORKDIR /src
# Dependencies first, built against stub sources: this layer is reused until a Cargo.toml or
# Cargo.lock change, so editing sources rebuilds only the workspace's own crates. Every member's
# manifest is needed for `--locked` to accept the workspace (crates/xtask/tests/image.rs checks this list
# against the workspace's members); only the operator and the emulator are built, the other
# members keep their stubs.
COPY Cargo.toml Cargo.lock ./
COPY crates/acs-client/Cargo.toml crates/acs-client/
COPY crates/acs-emulator/Cargo.toml crates/acs-emulator/
COPY crates/kubectl-acs/Cargo.toml crates/kubectl-acs/
COPY crates/test-support/Cargo.toml crates/test-support/
COPY crates/xtask/Cargo.toml crates/xtask/
RUN mkdir -p src/bin \
    && for c in acs-client acs-emulator kubectl-acs test-support xtask; do \
         mkdir -p crates/$c/src && touch crates/$c/src/lib.rs; done \
    && touch src/lib.rs \
    && echo 'fn main() {}' > src/bin/acs-identity-operator.rs \
    && for c in acs-emulator kubectl-acs xtask; do echo 'fn main() {}' > crates/$c/src/main.rs; done \
    && cargo build --release --locked -p acs-identity-operator -p acs-emulator --bins \
    && rm -rf src crates/acs-client/src crates/acs-emulator/src
COPY src ./src
COPY crates/acs-client/src ./crates/acs-client/src
COPY crates/acs-emulator/src ./crates/acs-emulator/src
# COPY keeps the context's modification times, which may be older than the stub build's:
# touch, so cargo rebuilds the workspace's crates from the real sources.
RUN find src crates -name '*.rs' -exec touch {} + \
    && cargo build --release --locked -p acs-identity-operator -p acs-emulator --bins

# The ACS emulator, for local development against a cluster (optional target).
FROM gcr.io/distroless/cc-debian12:nonroot AS emulator
COPY --from=builder /src/target/release/acs-emulator /usr/local/bin/acs-emulator
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/acs-emulator"]

# The default target (last stage): the operator only.
FROM gcr.io/distroless/cc-debian12:nonroot AS operator
COPY --from=builder /src/target/release/acs-identity-operator /usr/local/bin/acs-identity-operator
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/acs-identity-operator"]
CMD ["run"]
