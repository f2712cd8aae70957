package cli_test

import (
	"os"
	"regexp"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// ciWorkflow is the part of a GitHub Actions workflow the test reads.
type ciWorkflow struct {
	Env  map[string]string `yaml:"env"`
	Jobs map[string]struct {
		If          string `yaml:"if"`
		Environment string `yaml:"environment"`
		Steps       []struct {
			Name string            `yaml:"name"`
			Run  string            `yaml:"run"`
			Env  map[string]string `yaml:"env"`
		} `yaml:"steps"`
	} `yaml:"jobs"`
}

// TestCIExampleKeepsTheAdminCredentialOutOfPullRequests: the example workflow's plan job, which
// runs the pull request's code, sees only the read-only plan credential; the tenant-admin
// credential is used by the apply job of main in the protected `agents` environment alone; and
// agentctl is installed at a pinned version, never @latest.
func TestCIExampleKeepsTheAdminCredentialOutOfPullRequests(t *testing.T) {
	b, err := os.ReadFile("../../../examples/agents-as-code/github-actions.yml")
	if err != nil {
		t.Fatal(err)
	}
	var wf ciWorkflow
	if err := yaml.Unmarshal(b, &wf); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(b), "@latest") {
		t.Error("the example installs agentctl @latest")
	}
	if wf.Env["AGENTCTL_VERSION"] == "" {
		t.Error("the example has no AGENTCTL_VERSION")
	}
	admin := regexp.MustCompile(`secrets\.AGENTID_PIPELINE_CREDENTIAL`)
	for name, job := range wf.Jobs {
		var text strings.Builder
		installs := false
		for _, s := range job.Steps {
			text.WriteString(s.Run)
			for _, v := range s.Env {
				text.WriteString(" " + v)
			}
			if strings.Contains(s.Run, "go install") {
				installs = true
				if !strings.Contains(s.Run, "agentctl@${AGENTCTL_VERSION}") || !strings.Contains(s.Run, "[0-9a-f]{40}") {
					t.Errorf("job %s installs agentctl without the pinned, checked version: %q", name, s.Run)
				}
			}
		}
		if !installs {
			t.Errorf("job %s does not install agentctl", name)
		}
		usesAdmin := admin.MatchString(text.String())
		switch name {
		case "plan":
			if usesAdmin || job.Environment == "agents" || !strings.Contains(text.String(), "secrets.AGENTID_PLAN_CREDENTIAL") {
				t.Errorf("plan job: environment %q, uses the tenant-admin credential %v", job.Environment, usesAdmin)
			}
		case "apply":
			if !usesAdmin || job.Environment != "agents" || !strings.Contains(job.If, "refs/heads/main") || !strings.Contains(job.If, "push") {
				t.Errorf("apply job: environment %q, if %q", job.Environment, job.If)
			}
		default:
			if usesAdmin {
				t.Errorf("job %s uses the tenant-admin credential", name)
			}
		}
	}
}
