package grpcx

import (
	"context"
	"crypto/tls"
	"fmt"

	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	"github.com/agentid/agentid/pkg/tlsx"
)

// Dial creates a plaintext client connection to target (grpc.NewClient; it connects lazily): for the
// loopback connections of `agentid dev` and tests. It is DialTLS without a TLS configuration: creds
// are refused unless target is a loopback address.
func Dial(target string, creds credentials.PerRPCCredentials, opts ...grpc.DialOption) (*grpc.ClientConn, error) {
	return DialTLS(target, nil, creds, opts...)
}

// DialTLS creates a client connection to target (grpc.NewClient; it connects lazily) over TLS with
// tlsConfig (see tlsx.NewClientConfig), or in plaintext when tlsConfig is nil. creds, if not nil,
// authenticate every RPC (see authn.BearerCredentials); they are never sent in plaintext to a target
// that is not a loopback address: that is refused here. Every RPC forwards the request id of its
// context (WithRequestID, or the one a grpcx server assigned) as "x-request-id".
func DialTLS(target string, tlsConfig *tls.Config, creds credentials.PerRPCCredentials, opts ...grpc.DialOption) (*grpc.ClientConn, error) {
	transport := insecure.NewCredentials()
	if tlsConfig != nil {
		transport = credentials.NewTLS(tlsConfig)
	} else if creds != nil && !tlsx.IsLoopbackTarget(target) {
		return nil, fmt.Errorf("refusing to send bearer tokens in plaintext to %s, which is not a loopback address: connect over TLS (give the CA file of its certificate, --ca)", target)
	}
	all := []grpc.DialOption{
		grpc.WithTransportCredentials(transport),
		grpc.WithStatsHandler(otelgrpc.NewClientHandler()),
		grpc.WithChainUnaryInterceptor(unaryClientRequestID),
		grpc.WithChainStreamInterceptor(streamClientRequestID),
	}
	if creds != nil {
		all = append(all, grpc.WithPerRPCCredentials(creds))
	}
	return grpc.NewClient(target, append(all, opts...)...)
}

func outgoingWithRequestID(ctx context.Context) context.Context {
	id := RequestID(ctx)
	if id == "" {
		return ctx
	}
	if md, ok := metadata.FromOutgoingContext(ctx); ok && len(md.Get(RequestIDHeader)) > 0 {
		return ctx
	}
	return metadata.AppendToOutgoingContext(ctx, RequestIDHeader, id)
}

func unaryClientRequestID(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn,
	invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	return invoker(outgoingWithRequestID(ctx), method, req, reply, cc, opts...)
}

func streamClientRequestID(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string,
	streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	return streamer(outgoingWithRequestID(ctx), desc, cc, method, opts...)
}
