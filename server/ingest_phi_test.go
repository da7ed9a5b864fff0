package server_test

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/phigate/phigate/internal/stacktest"
	"github.com/phigate/phigate/server"
)

// TestFeedsKeepPHIOutOfLogsAndMetrics: ADT messages applied and refused,
// and FHIR resources refused, with phigate logging at debug level: no
// patient id, name, birth date or other identifier of the messages
// appears in the log, in /metrics or in the acknowledgements' reasons.
func TestFeedsKeepPHIOutOfLogsAndMetrics(t *testing.T) {
	var logs lockedBuffer
	logger := zap.New(zapcore.NewCore(zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()),
		zapcore.AddSync(&logs), zapcore.DebugLevel))
	tokenFile := t.TempDir() + "/token"
	if err := os.WriteFile(tokenFile, []byte("feedfacefeedfacefeedfacefeedface"), 0o600); err != nil {
		t.Fatal(err)
	}
	s := stacktest.Start(t, stacktest.Options{Logger: logger, Mutate: func(c *server.Config) {
		c.Log.Level = "debug"
		c.Ingest.MLLP.Listen = "127.0.0.1:0"
		c.Ingest.FHIR.Listen = "127.0.0.1:0"
		c.Ingest.FHIR.TokenFile = tokenFile
	}})
	forbidden := []string{"pat-7731", "Zyxwvut", "Qwertina", "19470312", "555-12-3456", "prac-9191 9"}
	conn, err := net.Dial("tcp", s.Phigate.MLLPAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	r := bufio.NewReader(conn)
	var acks []string
	for _, m := range []string{
		"PID|1||pat-7731^^^HOSP^MR~555-12-3456^^^SSA^SS||Zyxwvut^Qwertina||19470312\rPV1|1|I|W1||||prac-001\r",
		"PID|1||pat 7731^^^HOSP^MR||Zyxwvut^Qwertina||19470312\rPV1|1|I|W1||||prac-001\r",    // bad id
		"PID|1||pat-7731^^^HOSP^MR||Zyxwvut^Qwertina||19470312\rPV1|1|I|W1||||prac-9191 9\r", // bad doctor id
		"PID|1||pat-7731\\Q\\^^^HOSP^MR||Zyxwvut^Qwertina\rPV1|1|I\r",                        // bad escape
	} {
		ts := time.Now().UTC().Format("20060102150405-0700")
		msg := "MSH|^~\\&|ADT|HOSP|PHIGATE|HOSP|" + ts + "||ADT^A01|PHI-" + ts + "-" + string(rune('a'+len(acks))) + "|P|2.5\rEVN|A01|" + ts + "\r" + m
		_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := conn.Write([]byte("\x0b" + msg + "\x1c\r")); err != nil {
			t.Fatal(err)
		}
		ack, err := r.ReadString(0x1c)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = r.ReadByte()
		acks = append(acks, ack)
	}
	if !strings.Contains(acks[0], "MSA|AA") || !strings.Contains(acks[1], "MSA|AR") {
		t.Fatalf("acknowledgements %q", acks)
	}
	for _, body := range []string{`{"resourceType":"CareTeam","id":"t1","subject":{"reference":"Patient/pat 7731"}}`,
		`{"resourceType":"CareTeam","id":"t1","status":"Zyxwvut","subject":{"reference":"Patient/pat-7731"}}`} {
		req, _ := http.NewRequest("PUT", "http://"+s.Phigate.FHIRIngestAddr()+"/fhir/CareTeam/t1", strings.NewReader(body))
		req.Header.Set("content-type", "application/fhir+json")
		req.Header.Set("authorization", "Bearer feedfacefeedfacefeedfacefeedface")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnprocessableEntity {
			t.Fatalf("FHIR refusal: %d", resp.StatusCode)
		}
		acks = append(acks, string(b))
	}
	_, metrics := stacktest.GetBody(t, "http://"+s.Phigate.AdminAddr()+"/metrics")
	if !strings.Contains(metrics, `phigate_ingest_messages_total{event="A01",outcome="rejected",source="adt"} 3`) {
		t.Errorf("the refusals are not counted:\n%s", grepLines(metrics, "phigate_ingest_messages_total"))
	}
	logText := logs.String()
	if !strings.Contains(logText, "ADT message not applied") {
		t.Fatalf("the log has no ingest line; is it wired?\n%.500s", logText)
	}
	for _, where := range []struct{ name, text string }{{"log", logText}, {"metrics", metrics}, {"answers", strings.Join(acks, "\n")}} {
		for _, v := range forbidden {
			if strings.Contains(where.text, v) {
				t.Errorf("%s carries %q", where.name, v)
			}
		}
	}
}
