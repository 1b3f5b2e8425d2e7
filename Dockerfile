# envplane server image: a static binary on a small base.
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum go.work go.work.sum ./
COPY gen/go.mod gen/go.sum gen/
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -o /out/envplane ./cmd/envplane

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/envplane /usr/local/bin/envplane
USER nonroot
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/envplane"]
CMD ["serve", "--listen=0.0.0.0:8080", "--data-dir=/data"]
