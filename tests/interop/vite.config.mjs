// A stand-in for the Motion Canvas narrator plugin, for check_vite.py (and benchmarks/bench_serve.py) against a
// real Vite. Written here from the plugin's observed behaviour, to answer as it does:
// - entries live in `narrator-cache` (relative to Vite's working directory; NARRATOR_STANDIN_FOLDER names
//   another, as the plugin's audioPath option does), `{key}.{ext}` + `{key}.meta.json`;
// - a check looks for `{key}.mp3` only, and any failure to read the entry answers audio-not-found;
// - replies point at '/' + the folder + the file name, which Vite's own static serving of its root answers:
//   this plugin adds no HTTP route of its own (so no /__narrator-audio, health or cleanup either);
// - an upload's metadata file is the plugin's fields with the client's metadata spread over them;
// - sizes are limited in MiB; audio/mp3 is accepted next to audio/mpeg, audio/wav and audio/ogg;
// - narrator:available carries no data, errors carry {error, cacheKey}.
import { defineConfig } from 'vite';
import fs from 'node:fs';
import path from 'node:path';

const FOLDER = process.env.NARRATOR_STANDIN_FOLDER || 'narrator-cache';
const LIMIT_MIB = 50;
const ACCEPTED = new Set(['audio/mpeg', 'audio/mp3', 'audio/wav', 'audio/ogg']);
const SUFFIX = {
  'audio/mpeg': 'mp3', 'audio/mp3': 'mp3', 'audio/wav': 'wav', 'audio/ogg': 'ogg', 'audio/webm': 'webm',
};

// What a reply calls a file: a path from the site's root, as the browser will fetch it.
const served = (name) => '/' + path.join(FOLDER, name);

function narratorStandIn() {
  return {
    name: 'narrator-stand-in',
    configureServer(server) {
      fs.mkdirSync(FOLDER, { recursive: true });
      console.log('[narrator] webSocketToken =', server.config.webSocketToken);

      server.ws.on('narrator:check-available', (_payload, client) => {
        client.send('narrator:available', {});
      });

      server.ws.on('narrator:check-audio', async (payload, client) => {
        const key = payload && payload.cacheKey;
        const name = `${key}.mp3`;
        let meta;
        try {
          await fs.promises.access(path.join(FOLDER, name));
          meta = JSON.parse(await fs.promises.readFile(path.join(FOLDER, `${key}.meta.json`), 'utf8'));
        } catch {
          client.send('narrator:audio-not-found', { cacheKey: key });
          return;
        }
        client.send('narrator:audio-exists', {
          cacheKey: key, filePath: served(name), duration: meta.duration, metadata: meta,
        });
      });

      server.ws.on('narrator:upload-audio', async (payload, client) => {
        const key = payload && payload.cacheKey;
        try {
          const { data, mimeType, duration, metadata } = payload;
          if (!ACCEPTED.has(mimeType)) {
            client.send('narrator:upload-error', { error: `Unsupported mime type: ${mimeType}`, cacheKey: key });
            return;
          }
          const bytes = Buffer.from(data.substring(data.indexOf(',') + 1), 'base64');
          const mib = bytes.length / 1048576;
          if (mib > LIMIT_MIB) {
            const error = `File too large: ${mib.toFixed(2)}MB (max: ${LIMIT_MIB}MB)`;
            client.send('narrator:upload-error', { error, cacheKey: key });
            return;
          }
          const name = `${key}.${SUFFIX[mimeType] || 'mp3'}`;
          await fs.promises.writeFile(path.join(FOLDER, name), bytes);
          const record = Object.assign(
            {
              cacheKey: key, duration, mimeType, fileSize: bytes.length, fileName: name,
              createdAt: new Date().toISOString(),
            },
            metadata,
          );
          await fs.promises.writeFile(path.join(FOLDER, `${key}.meta.json`), JSON.stringify(record, null, 2));
          client.send('narrator:upload-success', {
            cacheKey: key, filePath: served(name), duration, size: bytes.length,
          });
        } catch (e) {
          const error = e instanceof Error ? e.message : String(e);
          client.send('narrator:upload-error', { error, cacheKey: key });
        }
      });
    },
  };
}

export default defineConfig({ plugins: [narratorStandIn()] });
