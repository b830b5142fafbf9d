package io.agentstream.example;

import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.time.Instant;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.stream.Stream;
import org.apache.avro.Schema;
import org.apache.avro.generic.GenericData;
import org.apache.avro.generic.GenericDatumReader;
import org.apache.avro.generic.GenericDatumWriter;
import org.apache.avro.generic.GenericRecord;
import org.apache.avro.io.BinaryEncoder;
import org.apache.avro.io.DecoderFactory;
import org.apache.avro.io.EncoderFactory;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.apache.kafka.common.serialization.ByteArraySerializer;
import org.apache.kafka.common.serialization.StringSerializer;

/** Publishes one AgentRequest and waits for its AgentResponse (see docs/contract.md). */
public final class AskAgent {
  private static final int REQUEST_SCHEMA_ID = 1;

  public static void main(String[] args) throws Exception {
    String bootstrap = env("AGENTSTREAM_BOOTSTRAP", "127.0.0.1:9092");
    Map<Integer, Schema> schemas = loadSchemas(Path.of(env("AGENTSTREAM_SCHEMAS", "../../agentstream/schemas/released")));

    Properties common = new Properties();
    common.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
    Properties producerProps = new Properties();
    producerProps.putAll(common);
    producerProps.put(ProducerConfig.ACKS_CONFIG, "all");
    producerProps.put(ProducerConfig.ENABLE_IDEMPOTENCE_CONFIG, "false"); // Tansu: none; enable on Kafka
    // the Java client's default partitioner hashes keys with murmur2: what agentstream requires
    Properties consumerProps = new Properties();
    consumerProps.putAll(common);
    consumerProps.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false");

    try (var producer = new KafkaProducer<>(producerProps, new StringSerializer(), new ByteArraySerializer());
        var consumer = new KafkaConsumer<>(consumerProps, new ByteArrayDeserializer(), new ByteArrayDeserializer())) {
      // no consumer group: read every partition of agent.responses from its end, positioned
      // before the request is sent so the answer cannot be missed
      List<TopicPartition> partitions = consumer.partitionsFor("agent.responses").stream()
          .map(p -> new TopicPartition(p.topic(), p.partition())).toList();
      consumer.assign(partitions);
      consumer.seekToEnd(partitions);
      partitions.forEach(consumer::position);

      GenericRecord request = new GenericData.Record(schemas.get(REQUEST_SCHEMA_ID));
      String requestId = "java-" + System.nanoTime();
      request.put("request_id", requestId);
      request.put("session_id", "java-example");
      request.put("user_id", "java-user");
      request.put("tenant_id", "examples");
      request.put("message", "add 2 and 3");
      request.put("allowed_tools", List.of("calculator"));
      request.put("metadata", Map.of("client", "java"));
      request.put("created_at", Instant.now().toEpochMilli());
      request.put("deadline", null);
      byte[] value = encode(request, REQUEST_SCHEMA_ID);
      RecordMetadata sent = producer.send(new ProducerRecord<>("agent.requests", "java-example", value)).get();

      Instant deadline = Instant.now().plusSeconds(60);
      while (Instant.now().isBefore(deadline)) {
        for (ConsumerRecord<byte[], byte[]> record : consumer.poll(Duration.ofMillis(200))) {
          GenericRecord response = decode(schemas, record.value());
          if (!requestId.equals(response.get("request_id").toString())) {
            continue;
          }
          String state = response.get("state").toString();
          System.out.printf("{\"client\": \"java\", \"request_id\": \"%s\", \"partition\": %d, \"state\": \"%s\", \"content\": \"%s\"}%n",
              requestId, sent.partition(), state, response.get("content"));
          System.exit("COMPLETED".equals(state) ? 0 : 1);
        }
      }
      System.err.println("no response for " + requestId + " within 60 s");
      System.exit(1);
    }
  }

  /** Released schemas, "<id>-<Name>.avsc": the id each was written under. */
  static Map<Integer, Schema> loadSchemas(Path dir) throws IOException {
    Map<Integer, Schema> schemas = new HashMap<>();
    try (Stream<Path> files = Files.list(dir)) {
      for (Path file : files.filter(f -> f.toString().endsWith(".avsc")).toList()) {
        int id = Integer.parseInt(file.getFileName().toString().split("-", 2)[0]);
        schemas.put(id, new Schema.Parser().parse(Files.readString(file, StandardCharsets.UTF_8)));
      }
    }
    return schemas;
  }

  /** Confluent wire format: magic byte 0, the schema id (4 bytes, big-endian), the Avro body. */
  static byte[] encode(GenericRecord record, int schemaId) throws IOException {
    ByteArrayOutputStream out = new ByteArrayOutputStream();
    out.write(0);
    out.write(ByteBuffer.allocate(4).putInt(schemaId).array());
    BinaryEncoder encoder = EncoderFactory.get().binaryEncoder(out, null);
    new GenericDatumWriter<GenericRecord>(record.getSchema()).write(record, encoder);
    encoder.flush();
    return out.toByteArray();
  }

  /** Reads a record with the writer schema its id names. */
  static GenericRecord decode(Map<Integer, Schema> schemas, byte[] data) throws IOException {
    ByteBuffer buffer = ByteBuffer.wrap(data);
    if (buffer.get() != 0) {
      throw new IOException("not Confluent wire format");
    }
    Schema writer = schemas.get(buffer.getInt());
    if (writer == null) {
      throw new IOException("unknown schema id");
    }
    var reader = new GenericDatumReader<GenericRecord>(writer);
    return reader.read(null, DecoderFactory.get().binaryDecoder(data, 5, data.length - 5, null));
  }

  private static String env(String name, String fallback) {
    String value = System.getenv(name);
    return value == null || value.isEmpty() ? fallback : value;
  }
}
