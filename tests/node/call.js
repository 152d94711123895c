// The official Alibaba Cloud Node SDK (@alicloud/openapi-client) calling `aliak serve`:
// its generic callApi, V3 (ACS3-HMAC-SHA256) signing, as every generated Node client does.
//
// Reads one JSON object on stdin:
//   {"endpoint": "127.0.0.1:PORT", "accessKeyId": "...", "accessKeySecret": "...",
//    "query": {...}, "body": {...}}
// and prints one JSON object on stdout:
//   {"rpcGet": RESULT, "roaPost": RESULT, "postBody": TEXT, "sent": [FRAMING, ...]}
// where RESULT is {"statusCode", "body"} for an answer the SDK accepted, or
// {"error": {"code", "statusCode", "message", "data"}} for one it raised on; postBody is the
// JSON text the SDK serialises the POST body to (what the server should have received);
// sent is, per HTTP request node sent, {"method", "path", "chunked", "contentLength"}.
//
// The SDK sends request bodies as a stream, so with Transfer-Encoding: chunked: this is the
// client that hung against a server that does not decode chunked bodies (issue #11, item 6).
"use strict";

const http = require("http");
const OpenApi = require("@alicloud/openapi-client");
const Util = require("@alicloud/tea-util");

const Client = OpenApi.default;

// How each request's body went on the wire, recorded once node has sent it: the test
// checks that the POST really was chunked, so that it keeps testing what it claims to.
const sent = [];
const originalRequest = http.request;
http.request = function (...args) {
  const request = originalRequest.apply(this, args);
  request.on("finish", () => {
    sent.push({
      method: request.method,
      path: request.path,
      chunked: request.chunkedEncoding === true,
      contentLength: request.getHeader("content-length") ?? null,
    });
  });
  return request;
};

function readStdin() {
  return new Promise((resolve, reject) => {
    const chunks = [];
    process.stdin.on("data", (chunk) => chunks.push(chunk));
    process.stdin.on("end", () => resolve(Buffer.concat(chunks).toString("utf8")));
    process.stdin.on("error", reject);
  });
}

async function call(client, params, request) {
  // No retries: a refusal or a timeout must show, not be papered over by a second try.
  const runtime = new Util.RuntimeOptions({
    autoretry: false,
    readTimeout: 10000,
    connectTimeout: 5000,
  });
  try {
    const response = await client.callApi(new OpenApi.Params(params), request, runtime);
    return { statusCode: response.statusCode, body: response.body };
  } catch (error) {
    return {
      error: {
        code: error.code,
        statusCode: error.statusCode,
        message: String(error.message),
        data: error.data === undefined ? null : error.data,
      },
    };
  }
}

async function main() {
  const input = JSON.parse(await readStdin());
  const client = new Client(
    new OpenApi.Config({
      accessKeyId: input.accessKeyId,
      accessKeySecret: input.accessKeySecret,
      endpoint: input.endpoint,
      protocol: "http",
    }),
  );
  const rpcGet = await call(
    client,
    {
      action: "DescribeThings",
      version: "2024-01-01",
      protocol: "HTTP",
      pathname: "/",
      method: "GET",
      authType: "AK",
      style: "RPC",
      reqBodyType: "formData",
      bodyType: "json",
    },
    new OpenApi.OpenApiRequest({ query: input.query }),
  );
  const roaPost = await call(
    client,
    {
      action: "CreateThing",
      version: "2024-01-01",
      protocol: "HTTP",
      pathname: "/things",
      method: "POST",
      authType: "AK",
      style: "ROA",
      reqBodyType: "json",
      bodyType: "json",
    },
    new OpenApi.OpenApiRequest({ body: input.body }),
  );
  // The same serialisation the SDK applies to a reqBodyType "json" body.
  const postBody = Util.default.toJSONString(input.body);
  process.stdout.write(JSON.stringify({ rpcGet, roaPost, postBody, sent }) + "\n");
}

main().catch((error) => {
  process.stderr.write(`call.js: ${error && error.stack ? error.stack : error}\n`);
  process.exit(1);
});
