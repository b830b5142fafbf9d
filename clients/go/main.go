// Command agentstream-go publishes one AgentRequest to agentstream and waits for its
// AgentResponse (see docs/contract.md): Confluent wire format, the request keyed by session_id,
// Java-compatible murmur2 partitioning.
package main

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/hamba/avro/v2"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kversion"
)

// AgentRequest is io.agentstream.AgentRequest (schema id 1).
type AgentRequest struct {
	RequestID    string            `avro:"request_id"`
	SessionID    string            `avro:"session_id"`
	UserID       string            `avro:"user_id"`
	TenantID     string            `avro:"tenant_id"`
	Message      string            `avro:"message"`
	AllowedTools []string          `avro:"allowed_tools"`
	Metadata     map[string]string `avro:"metadata"`
	CreatedAt    time.Time         `avro:"created_at"`
	Deadline     *time.Time        `avro:"deadline"`
}

const requestSchemaID = 1

// loadSchemas reads the released schemas: "<id>-<Name>.avsc" -> id -> schema.
func loadSchemas(dir string) (map[uint32]avro.Schema, error) {
	files, err := filepath.Glob(filepath.Join(dir, "*.avsc"))
	if err != nil || len(files) == 0 {
		return nil, fmt.Errorf("no schemas in %s", dir)
	}
	schemas := map[uint32]avro.Schema{}
	for _, file := range files {
		id, err := strconv.ParseUint(strings.SplitN(filepath.Base(file), "-", 2)[0], 10, 32)
		if err != nil {
			return nil, fmt.Errorf("%s: file name must start with the schema id", file)
		}
		text, err := os.ReadFile(file)
		if err != nil {
			return nil, err
		}
		// one cache per file: released versions of a record share its name
		schema, err := avro.ParseWithCache(string(text), "", &avro.SchemaCache{})
		if err != nil {
			return nil, fmt.Errorf("%s: %w", file, err)
		}
		schemas[uint32(id)] = schema
	}
	return schemas, nil
}

// encode frames an Avro body in the Confluent wire format: magic 0, 4-byte big-endian id.
func encode(schema avro.Schema, id uint32, v any) ([]byte, error) {
	body, err := avro.Marshal(schema, v)
	if err != nil {
		return nil, err
	}
	out := make([]byte, 5, 5+len(body))
	binary.BigEndian.PutUint32(out[1:], id)
	return append(out, body...), nil
}

// decode reads a wire-format record with the writer schema its id names.
func decode(schemas map[uint32]avro.Schema, data []byte) (map[string]any, error) {
	if len(data) < 5 || data[0] != 0 {
		return nil, fmt.Errorf("not Confluent wire format")
	}
	id := binary.BigEndian.Uint32(data[1:5])
	schema, ok := schemas[id]
	if !ok {
		return nil, fmt.Errorf("unknown schema id %d", id)
	}
	var record map[string]any
	err := avro.Unmarshal(schema, data[5:], &record)
	return record, err
}

func env(name, fallback string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return fallback
}

func main() {
	bootstrap := env("AGENTSTREAM_BOOTSTRAP", "127.0.0.1:9092")
	schemas, err := loadSchemas(env("AGENTSTREAM_SCHEMAS", "../../agentstream/schemas/released"))
	if err != nil {
		log.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	started := time.Now()
	client, err := kgo.NewClient(
		kgo.SeedBrokers(strings.Split(bootstrap, ",")...),
		// Tansu cannot parse the ApiVersions request of Kafka 4 clients: speak Kafka 3.9
		kgo.MaxVersions(kversion.V3_9_0()),
		kgo.DisableIdempotentWrite(),                         // Tansu has no idempotent producer; enable it on Kafka
		kgo.RecordPartitioner(kgo.StickyKeyPartitioner(nil)), // nil hasher: Kafka's murmur2
		kgo.ConsumeTopics("agent.responses"),
		// responses written after we started (no consumer group: every client sees all)
		kgo.ConsumeResetOffset(kgo.NewOffset().AfterMilli(started.Add(-time.Second).UnixMilli())),
	)
	if err != nil {
		log.Fatal(err)
	}
	defer client.Close()

	request := AgentRequest{
		RequestID:    fmt.Sprintf("go-%d", started.UnixNano()),
		SessionID:    "go-example",
		UserID:       "go-user",
		TenantID:     "examples",
		Message:      "add 2 and 3",
		AllowedTools: []string{"calculator"},
		Metadata:     map[string]string{"client": "go"},
		CreatedAt:    started.UTC(),
	}
	value, err := encode(schemas[requestSchemaID], requestSchemaID, request)
	if err != nil {
		log.Fatal(err)
	}
	record := &kgo.Record{Topic: "agent.requests", Key: []byte(request.SessionID), Value: value}
	produced, err := client.ProduceSync(ctx, record).First()
	if err != nil {
		log.Fatal(err)
	}

	for {
		fetches := client.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			log.Fatalf("no response for %s: %v", request.RequestID, err)
		}
		fetches.EachError(func(topic string, partition int32, err error) {
			log.Printf("fetch %s/%d: %v", topic, partition, err)
		})
		for _, r := range fetches.Records() {
			response, err := decode(schemas, r.Value)
			if err != nil || response["request_id"] != request.RequestID {
				continue
			}
			out, _ := json.Marshal(map[string]any{
				"client": "go", "request_id": request.RequestID, "partition": produced.Partition,
				"state": response["state"], "content": response["content"],
			})
			fmt.Println(string(out))
			if response["state"] != "COMPLETED" {
				os.Exit(1)
			}
			return
		}
	}
}
