// Publish one AgentRequest to agentstream and wait for its AgentResponse (docs/contract.md):
// Confluent wire format, the request keyed by session_id, kafkajs' default (Java-compatible
// murmur2) partitioner.
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import avro from "avsc";
import { Kafka, Partitioners, logLevel } from "kafkajs";

const REQUEST_SCHEMA_ID = 1;
const bootstrap = process.env.AGENTSTREAM_BOOTSTRAP ?? "127.0.0.1:9092";
const schemaDir = process.env.AGENTSTREAM_SCHEMAS ?? "../../agentstream/schemas/released";

/** Released schemas, "<id>-<Name>.avsc": the id each was written under. */
function loadSchemas(dir: string): Map<number, avro.Type> {
  const types = new Map<number, avro.Type>();
  for (const file of readdirSync(dir).filter((f) => f.endsWith(".avsc"))) {
    const schema = JSON.parse(readFileSync(join(dir, file), "utf8"));
    // a registry per file: released versions of a record share its name
    types.set(Number(file.split("-", 1)[0]), avro.Type.forSchema(schema, { registry: {} }));
  }
  return types;
}

/** Confluent wire format: magic byte 0, the schema id (4 bytes, big-endian), the Avro body. */
function encode(type: avro.Type, id: number, record: unknown): Buffer {
  const header = Buffer.alloc(5);
  header.writeUInt32BE(id, 1);
  return Buffer.concat([header, type.toBuffer(record)]);
}

/** Reads a record with the writer schema its id names. */
function decode(types: Map<number, avro.Type>, data: Buffer): Record<string, unknown> | undefined {
  const writer = data.length >= 5 && data[0] === 0 ? types.get(data.readUInt32BE(1)) : undefined;
  return writer?.fromBuffer(data.subarray(5)) as Record<string, unknown> | undefined;
}

async function main(): Promise<number> {
  const types = loadSchemas(schemaDir);
  const kafka = new Kafka({ clientId: "agentstream-ts", brokers: bootstrap.split(","), logLevel: logLevel.WARN });
  const producer = kafka.producer({
    createPartitioner: Partitioners.DefaultPartitioner, // murmur2, as the Java client: required
    idempotent: false, // Tansu has no idempotent producer; enable it on Kafka
    allowAutoTopicCreation: false,
  });
  const consumer = kafka.consumer({ groupId: `agentstream-ts-${process.pid}-${Date.now()}`, sessionTimeout: 6000, heartbeatInterval: 500 });
  const admin = kafka.admin();
  await Promise.all([producer.connect(), consumer.connect(), admin.connect()]);
  try {
    // where agent.responses ends now: read from there, so the answer cannot be missed
    const ends = await admin.fetchTopicOffsets("agent.responses");
    const requestId = `ts-${process.hrtime.bigint()}`;
    const joined = new Promise<void>((resolve) => consumer.on(consumer.events.GROUP_JOIN, () => resolve()));
    await consumer.subscribe({ topic: "agent.responses" });
    const answer = new Promise<Record<string, unknown>>((resolve) => {
      void consumer.run({
        eachMessage: async ({ message }) => {
          const response = message.value ? decode(types, message.value) : undefined;
          if (response?.request_id === requestId) resolve(response);
        },
      });
    });
    await joined;
    for (const { partition, offset } of ends) consumer.seek({ topic: "agent.responses", partition, offset });

    const request = {
      request_id: requestId,
      session_id: "ts-example",
      user_id: "ts-user",
      tenant_id: "examples",
      message: "add 2 and 3",
      allowed_tools: ["calculator"],
      metadata: { client: "typescript" },
      created_at: Date.now(), // timestamp-millis
      deadline: null,
    };
    const [sent] = await producer.send({
      topic: "agent.requests",
      messages: [{ key: request.session_id, value: encode(types.get(REQUEST_SCHEMA_ID)!, REQUEST_SCHEMA_ID, request) }],
    });
    const timeout = new Promise<never>((_, reject) => setTimeout(() => reject(new Error(`no response for ${requestId} within 60 s`)), 60_000).unref());
    const response = await Promise.race([answer, timeout]);
    console.log(JSON.stringify({ client: "typescript", request_id: requestId, partition: sent.partition, state: response.state, content: response.content }));
    return response.state === "COMPLETED" ? 0 : 1;
  } finally {
    await Promise.all([producer.disconnect(), consumer.disconnect(), admin.disconnect()]);
  }
}

main().then(
  (code) => process.exit(code),
  (err) => {
    console.error(err);
    process.exit(1);
  },
);
