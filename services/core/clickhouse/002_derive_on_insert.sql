-- The intake sends raw fields (JSONCompactEachRow, encoded in one call) and the engine
-- derives the rest on insert: the Python side stays a small share of each line's cost.
-- EPHEMERAL columns are inputs only: never stored, so the raw path's query string and
-- the full referrer URL never reach disk.
ALTER TABLE requests
    ADD COLUMN IF NOT EXISTS ts_ms UInt64 EPHEMERAL,
    ADD COLUMN IF NOT EXISTS raw_path String EPHEMERAL,
    ADD COLUMN IF NOT EXISTS referrer String EPHEMERAL,
    ADD COLUMN IF NOT EXISTS range_request Bool EPHEMERAL;

-- Query and fragment stripped; the rest of the path as sent.
ALTER TABLE requests MODIFY COLUMN ts DateTime64(3, 'UTC') DEFAULT fromUnixTimestamp64Milli(toInt64(ts_ms), 'UTC') CODEC(Delta, ZSTD);
ALTER TABLE requests MODIFY COLUMN path String DEFAULT splitByChar('#', splitByChar('?', raw_path)[1])[1] CODEC(ZSTD(3));
ALTER TABLE requests MODIFY COLUMN status_class LowCardinality(String) DEFAULT concat(toString(intDiv(status, 100)), 'xx');
-- No extension (or a trailing slash) is a page; unknown extensions are "other".
ALTER TABLE requests MODIFY COLUMN file_type LowCardinality(String) DEFAULT multiIf(
    extract(path, '\\.([^./]+)$') = '', 'page',
    transform(lower(extract(path, '\\.([^./]+)$')),
        ['html', 'htm', 'xhtml',
         'css',
         'js', 'mjs', 'cjs',
         'png', 'jpg', 'jpeg', 'gif', 'webp', 'avif', 'svg', 'ico', 'bmp', 'tif', 'tiff', 'apng', 'jxl', 'heic',
         'woff', 'woff2', 'ttf', 'otf', 'eot',
         'pdf', 'doc', 'docx', 'xls', 'xlsx', 'ppt', 'pptx', 'odt', 'ods', 'odp', 'rtf', 'txt', 'md', 'epub',
         'zip', 'tar', 'gz', 'tgz', 'bz2', 'xz', '7z', 'rar', 'zst',
         'mp3', 'wav', 'ogg', 'oga', 'flac', 'aac', 'm4a', 'opus', 'weba',
         'mp4', 'webm', 'mkv', 'mov', 'avi', 'm4v', 'ogv', 'mpeg',
         'xml', 'rss', 'atom',
         'json', 'csv', 'tsv', 'yaml', 'yml', 'toml', 'wasm', 'map', 'webmanifest', 'geojson'],
        ['page', 'page', 'page',
         'stylesheet',
         'script', 'script', 'script',
         'image', 'image', 'image', 'image', 'image', 'image', 'image', 'image', 'image', 'image', 'image', 'image', 'image', 'image',
         'font', 'font', 'font', 'font', 'font',
         'document', 'document', 'document', 'document', 'document', 'document', 'document', 'document', 'document', 'document', 'document', 'document', 'document', 'document',
         'archive', 'archive', 'archive', 'archive', 'archive', 'archive', 'archive', 'archive', 'archive',
         'audio', 'audio', 'audio', 'audio', 'audio', 'audio', 'audio', 'audio', 'audio',
         'video', 'video', 'video', 'video', 'video', 'video', 'video', 'video',
         'feed', 'feed', 'feed',
         'data', 'data', 'data', 'data', 'data', 'data', 'data', 'data', 'data', 'data'],
        'other'));
-- The pageview rule: a successful full GET of a page (bots are judged apart).
ALTER TABLE requests MODIFY COLUMN is_page Bool DEFAULT method = 'GET' AND status IN (200, 201, 304) AND file_type = 'page' AND NOT range_request;
-- The referrer's lowercased host ("www." kept); "" for none, "-", junk or a self-referral.
ALTER TABLE requests MODIFY COLUMN referrer_host String DEFAULT if(
    lower(trimRight(domain(if(position(referrer, '://') > 0 OR startsWith(referrer, '//'), trimBoth(referrer), concat('//', trimBoth(referrer)))), '.')) AS referrer_name
        IN ('', lower(host))
    OR NOT match(referrer_name, '^[\\w.:-]{1,253}$'),
    '', referrer_name) CODEC(ZSTD(3));

-- Every batch carries insert_deduplication_token; remember enough recent ones that a
-- replayed spool never double-counts.
ALTER TABLE requests MODIFY SETTING non_replicated_deduplication_window = 10000;
