// A grpc-js peer for the interop tests: serves interop.v1.Echo on 127.0.0.1 (port printed
// as the first line of output) and runs client calls against another server on request.
//
//   node peer.js [maxMessageBytes]
//
// Commands arrive on stdin, one JSON object per line, and are answered on stdout, one JSON
// object per line with the same id:
//   {"id":1,"op":"unary"|"clientStream"|"serverStream"|"bidi"|"fail","target":"127.0.0.1:5000",
//    "requests":[{...EchoRequest, paddingBytes}], "deadlineMs":100, "cancelAfterMs":50,
//    "maxReceiveBytes":1000}
//   -> {"id":1,"ok":true,"replies":[{"text":"a","index":0,"paddingBytes":0}]}
//   -> {"id":1,"ok":false,"code":4,"details":"Deadline exceeded"}
'use strict';
const path = require('path');
const readline = require('readline');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const definition = protoLoader.loadSync(path.join(__dirname, 'interop.proto'),
  { keepCase: false, longs: String, enums: Number, defaults: true });
const Echo = grpc.loadPackageDefinition(definition).interop.v1.Echo;
const maxMessageBytes = Number(process.argv[2] || 4 * 1024 * 1024);

let cancelled = 0;
const reply = (request, index) =>
  ({ text: request.text, index, padding: Buffer.alloc(request.replyPadding || 0, 0x61) });
const watch = (call) => {
  let gone = false;
  call.on('cancelled', () => { gone = true; cancelled++; });
  return () => gone;
};
const later = (ms, fn) => (ms > 0 ? setTimeout(fn, ms) : fn());

const service = {
  unary(call, callback) {
    const gone = watch(call);
    later(call.request.delayMs, () => { if (!gone()) callback(null, reply(call.request, 0)); });
  },
  clientStream(call, callback) {
    const gone = watch(call);
    const texts = [];
    let delay = 0;
    call.on('data', (r) => { texts.push(r.text); delay = Math.max(delay, r.delayMs); });
    call.on('end', () => later(delay, () => { if (!gone()) callback(null, { text: texts.join(','), index: texts.length }); }));
    call.on('error', () => {});
  },
  serverStream(call) {
    const gone = watch(call);
    const r = call.request;
    let i = 0;
    const next = () => {
      if (gone()) return;
      if (i >= r.count) { call.end(); return; }
      call.write(reply({ ...r, text: r.text + i }, i));
      i++;
      later(r.delayMs, next);
    };
    next();
  },
  bidi(call) {
    watch(call);
    let i = 0;
    call.on('data', (r) => later(r.delayMs, () => call.write(reply(r, i++))));
    call.on('end', () => call.end());
    call.on('error', () => {});
  },
  fail(call, callback) {
    callback({ code: call.request.statusCode, details: call.request.statusMessage });
  },
  stats(call, callback) {
    callback(null, { cancelled });
  },
};

const clients = new Map();
function clientFor(target, maxReceiveBytes) {
  const key = `${target}|${maxReceiveBytes || ''}`;
  if (!clients.has(key)) {
    const options = maxReceiveBytes ? { 'grpc.max_receive_message_length': maxReceiveBytes } : {};
    clients.set(key, new Echo(target, grpc.credentials.createInsecure(), options));
  }
  return clients.get(key);
}

const toRequest = (r) => ({ ...r, padding: Buffer.alloc(r.paddingBytes || 0, 0x62) });
const toReply = (r) => ({ text: r.text, index: r.index, paddingBytes: r.padding.length });

function run(command, done) {
  const client = clientFor(command.target, command.maxReceiveBytes);
  const options = command.deadlineMs ? { deadline: Date.now() + command.deadlineMs } : {};
  const requests = (command.requests || [{}]).map(toRequest);
  const replies = [];
  const fail = (e) => done({ ok: false, code: e.code, details: e.details });
  const unaryDone = (e, r) => (e ? fail(e) : done({ ok: true, replies: [toReply(r)] }));
  let call;
  switch (command.op) {
    case 'unary': call = client.unary(requests[0], options, unaryDone); break;
    case 'fail': call = client.fail(requests[0], options, unaryDone); break;
    case 'clientStream':
      call = client.clientStream(options, unaryDone);
      requests.forEach((r) => call.write(r));
      call.end();
      break;
    case 'serverStream':
    case 'bidi': {
      call = command.op === 'bidi' ? client.bidi(options) : client.serverStream(requests[0], options);
      let failed = false;
      call.on('data', (r) => replies.push(toReply(r)));
      call.on('error', (e) => { failed = true; fail(e); });
      call.on('status', (s) => { if (!failed && s.code === grpc.status.OK) done({ ok: true, replies }); });
      if (command.op === 'bidi') {
        requests.forEach((r) => call.write(r));
        if (!command.keepOpen) call.end();
      }
      break;
    }
    default: done({ ok: false, code: -1, details: `unknown op ${command.op}` }); return;
  }
  if (command.cancelAfterMs) setTimeout(() => call.cancel(), command.cancelAfterMs);
}

const server = new grpc.Server({
  'grpc.max_receive_message_length': maxMessageBytes,
  'grpc.max_send_message_length': maxMessageBytes,
});
server.addService(Echo.service, service);
server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (error, port) => {
  if (error) { console.error(error.message); process.exit(1); }
  console.log(JSON.stringify({ event: 'listening', port }));
  const lines = readline.createInterface({ input: process.stdin });
  lines.on('line', (line) => {
    let command;
    try { command = JSON.parse(line); } catch (e) { console.log(JSON.stringify({ ok: false, code: -1, details: `bad command: ${e.message}` })); return; }
    let answered = false;
    run(command, (result) => {
      if (answered) return;
      answered = true;
      console.log(JSON.stringify({ id: command.id, ...result }));
    });
  });
  // The test process owns us: when it goes away (stdin closes), so do we.
  lines.on('close', () => process.exit(0));
});
