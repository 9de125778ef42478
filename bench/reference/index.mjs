// Benchmark reference, not part of the product: the per-frame path of Twilio's official Node.js
// sample relay ("speech-assistant-openai-realtime-api-node": fastify, @fastify/websocket, ws),
// written down here so `BENCH_TARGET=reference bench/run.sh` measures it with the same load, the
// same stand-in and the same /proc accounting as our relay. It keeps what costs CPU per frame in
// the sample: JSON.parse of every message each way, JSON.stringify of every message sent, one
// `mark` after every audio delta, a mark queue, timestamps kept for truncation. Greeting, logging
// and the truncate itself happen once per turn, not per frame, and are left out.
//
// Environment: PORT (5050), HOST (127.0.0.1), OPENAI_REALTIME_URL (the stand-in's
// ws://…/v1/realtime), OPENAI_API_KEY.
import Fastify from 'fastify';
import fastifyWs from '@fastify/websocket';
import WebSocket from 'ws';

const {
  PORT = '5050',
  HOST = '127.0.0.1',
  OPENAI_API_KEY = 'sk-bench',
  OPENAI_REALTIME_URL = 'ws://127.0.0.1:9090/v1/realtime',
} = process.env;

const fastify = Fastify();
await fastify.register(fastifyWs);

fastify.get('/health', async () => ({ status: 'ok' }));

fastify.register(async (app) => {
  app.get('/media-stream', { websocket: true }, (connection) => {
    let streamSid = null;
    let latestMediaTimestamp = 0;
    let lastAssistantItem = null;
    let markQueue = [];
    let responseStartTimestampTwilio = null;

    const openAiWs = new WebSocket(`${OPENAI_REALTIME_URL}?model=gpt-realtime`, {
      headers: { Authorization: `Bearer ${OPENAI_API_KEY}` },
    });

    openAiWs.on('open', () => {
      openAiWs.send(JSON.stringify({
        type: 'session.update',
        session: {
          type: 'realtime',
          model: 'gpt-realtime',
          output_modalities: ['audio'],
          audio: {
            input: { format: { type: 'audio/pcmu' }, turn_detection: { type: 'server_vad' } },
            output: { format: { type: 'audio/pcmu' }, voice: 'alloy' },
          },
          instructions: 'benchmark',
        },
      }));
    });

    const sendMark = () => {
      if (streamSid) {
        connection.send(JSON.stringify({ event: 'mark', streamSid, mark: { name: 'responsePart' } }));
        markQueue.push('responsePart');
      }
    };

    openAiWs.on('message', (data) => {
      const response = JSON.parse(data);
      if (response.type === 'response.output_audio.delta' && response.delta) {
        connection.send(JSON.stringify({ event: 'media', streamSid, media: { payload: response.delta } }));
        if (!responseStartTimestampTwilio) responseStartTimestampTwilio = latestMediaTimestamp;
        if (response.item_id) lastAssistantItem = response.item_id;
        sendMark();
      } else if (response.type === 'input_audio_buffer.speech_started') {
        if (markQueue.length > 0) {
          connection.send(JSON.stringify({ event: 'clear', streamSid }));
          markQueue = [];
          lastAssistantItem = null;
          responseStartTimestampTwilio = null;
        }
      }
    });

    connection.on('message', (message) => {
      const data = JSON.parse(message);
      switch (data.event) {
        case 'media':
          latestMediaTimestamp = data.media.timestamp;
          if (openAiWs.readyState === WebSocket.OPEN) {
            openAiWs.send(JSON.stringify({ type: 'input_audio_buffer.append', audio: data.media.payload }));
          }
          break;
        case 'start':
          streamSid = data.start.streamSid;
          responseStartTimestampTwilio = null;
          latestMediaTimestamp = 0;
          break;
        case 'mark':
          if (markQueue.length > 0) markQueue.shift();
          break;
        default:
          break;
      }
    });

    connection.on('close', () => {
      if (openAiWs.readyState === WebSocket.OPEN) openAiWs.close();
    });
    openAiWs.on('close', () => connection.close());
    openAiWs.on('error', () => connection.close());
  });
});

await fastify.listen({ port: Number(PORT), host: HOST });
