package grpcx

import (
	"context"
	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
)

// Dial creates a client connection to target (grpc.NewClient; it connects lazily). creds, if not
// nil, authenticate every RPC (see authn.PerRPCCredentials). Every RPC forwards the request id of its
// context (WithRequestID, or the one a grpcx server assigned) as "x-request-id".
//
// The transport is plaintext by default, meant for loopback connections of `agentid dev` and tests;
// pass grpc.WithTransportCredentials(credentials.NewTLS(...)) in opts for TLS (later options win).
func Dial(target string, creds credentials.PerRPCCredentials, opts ...grpc.DialOption) (*grpc.ClientConn, error) {
	all := []grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
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
