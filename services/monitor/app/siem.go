package app

import (
	"errors"
	"fmt"
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/agentid/agentid/pkg/eventstore"
	"github.com/agentid/agentid/services/monitor/internal/siem"
)

// validateSIEM checks the SIEM export settings: a webhook needs its secret file and an https URL
// (http to a loopback address only).
func (c Config) validateSIEM() error {
	switch {
	case c.SIEMWebhookURL == "" && c.SIEMWebhookSecretFile != "":
		return errors.New("monitor: --siem-webhook-secret-file is set without --siem-webhook-url")
	case c.SIEMWebhookURL == "":
		return nil
	case c.SIEMDisabled:
		return errors.New("monitor: --siem-webhook-url is set but the SIEM export is turned off")
	case c.SIEMWebhookSecretFile == "":
		return errors.New("monitor: --siem-webhook-url needs --siem-webhook-secret-file (the HMAC secret the requests are signed with)")
	}
	if _, err := siem.CheckWebhookURL(c.SIEMWebhookURL); err != nil {
		return fmt.Errorf("monitor: --siem-webhook-url: %w", err)
	}
	return nil
}

// newSIEMExporter builds the SIEM export (nil when turned off): OCSF copies of alerts and
// audit-relevant events on siem.ocsf.<tenant>, and to the webhook when one is configured.
func newSIEMExporter(cfg Config, es *eventstore.Store, logger *slog.Logger, reg prometheus.Registerer) (*siem.Exporter, error) {
	if cfg.SIEMDisabled {
		return nil, nil
	}
	var wh *siem.Webhook
	if cfg.SIEMWebhookURL != "" {
		secret, err := siem.LoadSecret(cfg.SIEMWebhookSecretFile)
		if err != nil {
			return nil, fmt.Errorf("monitor: %w", err)
		}
		if wh, err = siem.NewWebhook(siem.WebhookConfig{URL: cfg.SIEMWebhookURL, Secret: secret}); err != nil {
			return nil, fmt.Errorf("monitor: %w", err)
		}
	}
	return siem.New(siem.Config{Source: es, JetStream: es.JetStream(), Webhook: wh, Logger: logger, Registerer: reg})
}
