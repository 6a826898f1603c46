package redfish

import (
	"fmt"
	"os"
	"strings"

	"gopkg.in/yaml.v3"
)

// CredentialsFromEnv reads PREFIX_USER and PREFIX_PASSWORD (for example
// PHOENIX_BMC_USER and PHOENIX_BMC_PASSWORD). Both unset is not an error:
// it returns empty strings, for BMCs without authentication.
func CredentialsFromEnv(prefix string) (user, pass string, err error) {
	uk, pk := prefix+"_USER", prefix+"_PASSWORD"
	user, pass = os.Getenv(uk), os.Getenv(pk)
	switch {
	case user == "" && pass == "":
		return "", "", nil
	case user == "":
		return "", "", fmt.Errorf("%s is set but %s is not", pk, uk)
	case pass == "":
		return "", "", fmt.Errorf("%s is set but %s is not", uk, pk)
	}
	return user, pass, nil
}

// CredentialsFromFile reads "user:password" or YAML {username, password}
// from path. It refuses a file that group or others can read: a password
// left world-readable is a password already leaked. Errors never quote
// the file's content.
func CredentialsFromFile(path string) (user, pass string, err error) {
	fi, err := os.Stat(path)
	if err != nil {
		return "", "", fmt.Errorf("credentials file: %w", err)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return "", "", fmt.Errorf("credentials file %s is readable by group or others (mode %04o); chmod 600 it", path, perm)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", "", fmt.Errorf("credentials file: %w", err)
	}
	var y struct {
		Username string `yaml:"username"`
		Password string `yaml:"password"`
	}
	if yaml.Unmarshal(b, &y) == nil && y.Username != "" {
		return y.Username, y.Password, nil
	}
	line := strings.TrimRight(strings.SplitN(string(b), "\n", 2)[0], "\r")
	user, pass, ok := strings.Cut(line, ":")
	if !ok || user == "" {
		return "", "", fmt.Errorf("credentials file %s: want \"user:password\" or YAML with username and password", path)
	}
	return user, pass, nil
}
