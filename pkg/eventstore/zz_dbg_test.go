package eventstore_test

import (
	"log/slog"
	"os"
)

var dbgLogger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
