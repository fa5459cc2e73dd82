// A stand-in for the Motion Canvas narrator plugin (motion-canvas-narrator is not on npm), written from
// the feature description: the events narrator serve speaks, on Vite's own HMR WebSocket. Used by check_vite.py.
import { defineConfig } from 'vite';
import fs from 'node:fs';
import path from 'node:path';

const CACHE_DIR = path.resolve('./audio-cache');
const EXT = { 'audio/mpeg': 'mp3', 'audio/wav': 'wav', 'audio/ogg': 'ogg' };
const CTYPE = { mp3: 'audio/mpeg', wav: 'audio/wav', ogg: 'audio/ogg' };

function narratorStandIn() {
  return {
    name: 'narrator-stand-in',
    configureServer(server) {
      fs.mkdirSync(CACHE_DIR, { recursive: true });
      console.log('[narrator] webSocketToken =', server.config.webSocketToken);

      server.ws.on('narrator:check-available', (_data, client) => {
        client.send('narrator:available', {});
      });

      server.ws.on('narrator:check-audio', (data, client) => {
        const cacheKey = data && data.cacheKey;
        const metaPath = path.join(CACHE_DIR, `${cacheKey}.meta.json`);
        if (typeof cacheKey === 'string' && fs.existsSync(metaPath)) {
          const meta = JSON.parse(fs.readFileSync(metaPath, 'utf8'));
          client.send('narrator:audio-exists', {
            cacheKey,
            filePath: '/__narrator-audio/' + meta.fileName,
            duration: meta.duration,
            metadata: meta,
          });
        } else {
          client.send('narrator:audio-not-found', { cacheKey });
        }
      });

      server.ws.on('narrator:upload-audio', (data, client) => {
        const { cacheKey, mimeType, duration, metadata } = data || {};
        try {
          const ext = EXT[mimeType];
          if (!ext) throw new Error(`unsupported mime type ${mimeType}`);
          const m = /^data:([^;]+);base64,(.*)$/s.exec(data.data || '');
          if (!m) throw new Error('bad data URL');
          const buf = Buffer.from(m[2], 'base64');
          const fileName = `${cacheKey}.${ext}`;
          fs.writeFileSync(path.join(CACHE_DIR, fileName), buf);
          const meta = {
            ...(metadata || {}),
            cacheKey,
            duration,
            mimeType,
            fileSize: buf.length,
            fileName,
            createdAt: new Date().toISOString(),
          };
          fs.writeFileSync(path.join(CACHE_DIR, `${cacheKey}.meta.json`), JSON.stringify(meta, null, 2));
          console.log(`[narrator] stored ${fileName} (${buf.length} bytes)`);
          client.send('narrator:upload-success', {
            cacheKey,
            filePath: '/__narrator-audio/' + fileName,
            duration,
            size: buf.length,
          });
        } catch (e) {
          client.send('narrator:upload-error', { cacheKey, error: String(e && e.message || e) });
        }
      });

      server.middlewares.use('/__narrator-audio', (req, res, next) => {
        const name = decodeURIComponent((req.url || '/').split('?')[0].replace(/^\//, ''));
        if (!/^[A-Za-z0-9_-]+\.(mp3|wav|ogg)$/.test(name)) return next();
        const file = path.join(CACHE_DIR, name);
        if (!fs.existsSync(file)) { res.statusCode = 404; return res.end('not found'); }
        const ext = name.split('.').pop();
        res.setHeader('Content-Type', CTYPE[ext]);
        res.setHeader('Content-Length', fs.statSync(file).size);
        fs.createReadStream(file).pipe(res);
      });
    },
  };
}

export default defineConfig({ plugins: [narratorStandIn()] });
