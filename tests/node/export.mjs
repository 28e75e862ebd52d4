// Two Node services export a small Kafka shop through the OpenTelemetry SDK.
//
// The exporters get no options in code: endpoint, protocol, CA, client
// certificate and token come from the standard OTEL_EXPORTER_OTLP_*
// variables, exactly as a user configures them. OTEL_EXPORTER_OTLP_PROTOCOL
// picks the exporter package (http/json, http/protobuf or grpc), as the
// Node SDK's own setup does.
//
// "orders" publishes SHOP_MESSAGES orders (default 3) to the Kafka topic
// shop.orders; "payments" processes each one, continuing the trace from the
// message headers (W3C traceparent), and fails the last with "card declined".
// Exits 0 when every export succeeded, 1 (saying why on stderr) otherwise.

import {
  context,
  DiagConsoleLogger,
  DiagLogLevel,
  diag,
  propagation,
  ROOT_CONTEXT,
  SpanKind,
  SpanStatusCode,
  trace,
} from "@opentelemetry/api";
import { ExportResultCode, W3CTraceContextPropagator } from "@opentelemetry/core";
import { OTLPTraceExporter as GrpcExporter } from "@opentelemetry/exporter-trace-otlp-grpc";
import { OTLPTraceExporter as JsonExporter } from "@opentelemetry/exporter-trace-otlp-http";
import { OTLPTraceExporter as ProtobufExporter } from "@opentelemetry/exporter-trace-otlp-proto";
import { resourceFromAttributes } from "@opentelemetry/resources";
import { BasicTracerProvider, BatchSpanProcessor } from "@opentelemetry/sdk-trace-base";
import { ATTR_SERVICE_NAME } from "@opentelemetry/semantic-conventions";
import {
  ATTR_MESSAGING_CONSUMER_GROUP_NAME,
  ATTR_MESSAGING_DESTINATION_NAME,
  ATTR_MESSAGING_MESSAGE_ID,
  ATTR_MESSAGING_OPERATION_TYPE,
  ATTR_MESSAGING_SYSTEM,
} from "@opentelemetry/semantic-conventions/incubating";

diag.setLogger(new DiagConsoleLogger(), DiagLogLevel.WARN);
propagation.setGlobalPropagator(new W3CTraceContextPropagator());

const EXPORTERS = {
  "http/json": JsonExporter,
  "http/protobuf": ProtobufExporter,
  grpc: GrpcExporter,
};
const protocol =
  process.env.OTEL_EXPORTER_OTLP_TRACES_PROTOCOL ||
  process.env.OTEL_EXPORTER_OTLP_PROTOCOL ||
  "http/protobuf";
if (!(protocol in EXPORTERS)) {
  console.error(`export.mjs: unknown OTEL_EXPORTER_OTLP_PROTOCOL '${protocol}'`);
  process.exit(2);
}
const messages = Number(process.env.SHOP_MESSAGES || "3");

const failures = [];

// Notes every export's outcome: a failed export is what this script reports.
class Recording {
  constructor(exporter) {
    this.exporter = exporter;
  }
  export(spans, done) {
    this.exporter.export(spans, (result) => {
      if (result.code !== ExportResultCode.SUCCESS) {
        failures.push(result.error ?? new Error("export failed"));
      }
      done(result);
    });
  }
  forceFlush() {
    return this.exporter.forceFlush();
  }
  shutdown() {
    return this.exporter.shutdown();
  }
}

function service(name) {
  const Exporter = EXPORTERS[protocol];
  return new BasicTracerProvider({
    resource: resourceFromAttributes({ [ATTR_SERVICE_NAME]: name }),
    spanProcessors: [
      new BatchSpanProcessor(new Recording(new Exporter()), { scheduledDelayMillis: 60_000 }),
    ],
  });
}

const orders = service("orders");
const payments = service("payments");
const producer = orders.getTracer("shop.orders");
const consumer = payments.getTracer("shop.payments");

for (let n = 0; n < messages; n++) {
  const publish = producer.startSpan("send shop.orders", {
    kind: SpanKind.PRODUCER,
    attributes: {
      [ATTR_MESSAGING_SYSTEM]: "kafka",
      [ATTR_MESSAGING_OPERATION_TYPE]: "send",
      [ATTR_MESSAGING_DESTINATION_NAME]: "shop.orders",
      [ATTR_MESSAGING_MESSAGE_ID]: `order-${n}`,
    },
  });
  const headers = {};
  propagation.inject(trace.setSpan(context.active(), publish), headers);
  publish.end();

  const process_ = consumer.startSpan(
    "process shop.orders",
    {
      kind: SpanKind.CONSUMER,
      attributes: {
        [ATTR_MESSAGING_SYSTEM]: "kafka",
        [ATTR_MESSAGING_OPERATION_TYPE]: "process",
        [ATTR_MESSAGING_DESTINATION_NAME]: "shop.orders",
        [ATTR_MESSAGING_CONSUMER_GROUP_NAME]: "payments",
        [ATTR_MESSAGING_MESSAGE_ID]: `order-${n}`,
      },
    },
    propagation.extract(ROOT_CONTEXT, headers),
  );
  if (n === messages - 1) {
    process_.setStatus({ code: SpanStatusCode.ERROR, message: "card declined" });
  }
  process_.end();
}

for (const provider of [orders, payments]) {
  try {
    await provider.forceFlush();
  } catch (error) {
    // The same failure the exporter already reported, unless it never ran.
    if (failures.length === 0) failures.push(error);
  }
  await provider.shutdown();
}
if (failures.length > 0) {
  console.error(`export.mjs: ${failures.length} export(s) over ${protocol} failed:`);
  for (const error of failures) console.error(`  ${error?.message ?? error}`);
  process.exit(1);
}
console.log(`export.mjs: ${2 * messages} spans exported over ${protocol}`);
