using System.Net;
using System.Net.Http.Headers;
using System.Security.Cryptography;
using System.Text.Json;

namespace Ullme.MLNet.Hub;

/// <summary>
/// Resolves a Hugging Face model id to a snapshot folder of the Hub cache: from the cache when the revision's snapshot
/// already holds what a load needs (no request at all), otherwise by downloading the missing files the way
/// huggingface_hub does: <c>GET {endpoint}/api/models/{id}/revision/{rev}</c> (commit and file list), then per file
/// <c>HEAD {endpoint}/{id}/resolve/{commit}/{file}</c> (<c>ETag</c> / <c>X-Linked-Etag</c>, <c>X-Linked-Size</c>,
/// redirects to the LFS store) and a <c>GET</c> into <c>blobs/{etag}.incomplete</c>, resumed with <c>Range</c>,
/// checked against the size and (LFS files) the sha256, renamed into place and linked from the snapshot.
/// </summary>
internal static class HubDownloader
{
    private const int Attempts = 5;
    private const long ReportEvery = 1L << 20;

    /// <summary>The snapshot folder of <paramref name="id"/> holding what a load needs.</summary>
    public static string Ensure(HubModelId id, HubOptions options, IProgress<ModelDownloadProgress>? progress = null, CancellationToken cancellationToken = default) =>
        EnsureAsync(id, options, progress, cancellationToken).GetAwaiter().GetResult();

    public static async Task<string> EnsureAsync(HubModelId id, HubOptions options, IProgress<ModelDownloadProgress>? progress, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(options);
        var cache = new HubCache(options.CacheFolder);
        string revision = id.EffectiveRevision;
        string? cachedCommit = cache.ResolveRevision(id, revision);
        List<string>? cachedMissing = null;
        if (cachedCommit is not null)
        {
            string snapshot = cache.SnapshotFolder(id, cachedCommit);
            cachedMissing = HubCache.MissingForLoad(snapshot);
            if (cachedMissing.Count == 0) return snapshot;
        }
        string endpoint = options.Endpoint.TrimEnd('/');
        if (options.Offline)
            throw new UllmeException(
                $"Hugging Face model '{id.RepoId}' (revision {revision}) " +
                (cachedMissing is null
                    ? $"is not in the Hub cache (looked in '{cache.RepoFolder(id)}')"
                    : $"is only partly in the Hub cache ('{cache.SnapshotFolder(id, cachedCommit!)}' lacks {string.Join(", ", cachedMissing)})") +
                $", and HF_HUB_OFFLINE is set, so nothing was downloaded from {endpoint}. Download it once online (unset HF_HUB_OFFLINE), " +
                "or give a local model folder (no folder of that name exists either).");

        using var session = new Session(id, options, cache, endpoint);
        return await session.DownloadAsync(progress, cancellationToken).ConfigureAwait(false);
    }

    private sealed record FilePlan(string File, string Etag, long? Size, bool IsLfs, Uri Url);

    private sealed class Session(HubModelId id, HubOptions options, HubCache cache, string endpoint) : IDisposable
    {
        private readonly HttpClient _http = CreateClient(options);
        private readonly string _revision = id.EffectiveRevision;

        public void Dispose() => _http.Dispose();

        private string Where => $"{endpoint} (revision {_revision})";

        private string CachePart => $"It is not in the Hub cache either (looked in '{cache.RepoFolder(id)}'), and no local folder of that name exists.";

        public async Task<string> DownloadAsync(IProgress<ModelDownloadProgress>? progress, CancellationToken ct)
        {
            var (commit, siblings) = await RevisionInfoAsync(ct).ConfigureAwait(false);
            string snapshot = cache.SnapshotFolder(id, commit);
            var files = ModelFiles.Select(siblings, id, Where);
            foreach (string f in files)
                if (!ModelFiles.IsSafeRelative(f))
                    throw new UllmeException($"The Hub listed the file '{f}' for '{id.RepoId}', a path outside the repository: refusing it.");
            if (files.Contains(ModelFiles.WeightsIndex))
            {
                // The index says which shards there are: fetch it first.
                await FetchAllAsync([ModelFiles.WeightsIndex], commit, snapshot, null, ct).ConfigureAwait(false);
                var listed = new HashSet<string>(siblings, StringComparer.Ordinal);
                foreach (string shard in ModelFiles.ShardsOf(Path.Combine(snapshot, ModelFiles.WeightsIndex)))
                {
                    if (!listed.Contains(shard))
                        throw new UllmeException($"'{ModelFiles.WeightsIndex}' of '{id.RepoId}' at {Where} names the shard '{shard}', which the repository does not have.");
                    files.Add(shard);
                }
            }
            await FetchAllAsync(files, commit, snapshot, progress, ct).ConfigureAwait(false);
            cache.WriteRef(id, _revision, commit);
            var missing = HubCache.MissingForLoad(snapshot);
            if (missing.Count > 0)
                throw new UllmeException($"The Hugging Face repository '{id.RepoId}' at {Where} lacks what a load needs: {string.Join(", ", missing)}.");
            return snapshot;
        }

        private async Task FetchAllAsync(IReadOnlyList<string> files, string commit, string snapshot, IProgress<ModelDownloadProgress>? progress, CancellationToken ct)
        {
            var plans = new List<FilePlan>();
            foreach (string file in files)
            {
                if (HubCache.Has(snapshot, file)) continue;
                plans.Add(await HeadAsync(file, commit, ct).ConfigureAwait(false));
            }
            long total = plans.Sum(p => p.Size ?? 0), before = 0;
            for (int i = 0; i < plans.Count; i++)
            {
                var plan = plans[i];
                int index = i + 1;
                long doneBefore = before;
                progress?.Report(new ModelDownloadProgress(id.RepoId, plan.File, index, plans.Count, doneBefore, total));
                await FetchAsync(plan, commit, ct, bytes => progress?.Report(new ModelDownloadProgress(id.RepoId, plan.File, index, plans.Count, doneBefore + bytes, total))).ConfigureAwait(false);
                before += plan.Size ?? 0;
                progress?.Report(new ModelDownloadProgress(id.RepoId, plan.File, index, plans.Count, before, total));
            }
        }

        private async Task<(string Commit, List<string> Siblings)> RevisionInfoAsync(CancellationToken ct)
        {
            var url = new Uri($"{endpoint}/api/models/{id.RepoId}/revision/{Uri.EscapeDataString(_revision)}");
            using var response = await SendAsync(HttpMethod.Get, url, null, ct).ConfigureAwait(false);
            if (!response.IsSuccessStatusCode) throw StatusError(response, url, null);
            byte[] body;
            try
            {
                body = await response.Content.ReadAsByteArrayAsync(ct).ConfigureAwait(false);
            }
            catch (Exception e) when (e is HttpRequestException or IOException or TaskCanceledException && !ct.IsCancellationRequested)
            {
                throw Unreachable(url, e);
            }
            try
            {
                using var doc = JsonDocument.Parse(body);
                var root = doc.RootElement;
                string? sha = root.TryGetProperty("sha", out var s) && s.ValueKind == JsonValueKind.String ? s.GetString() : null;
                if (sha is null || !HubCache.IsCommitHash(sha))
                    throw new UllmeException($"{url} answered without a commit hash (\"sha\"): it does not look like a Hugging Face Hub (check HF_ENDPOINT).");
                var siblings = new List<string>();
                if (root.TryGetProperty("siblings", out var list) && list.ValueKind == JsonValueKind.Array)
                    foreach (var item in list.EnumerateArray())
                        if (item.ValueKind == JsonValueKind.Object && item.TryGetProperty("rfilename", out var f) && f.ValueKind == JsonValueKind.String)
                            siblings.Add(f.GetString()!);
                return (sha, siblings);
            }
            catch (JsonException e)
            {
                throw new UllmeException($"{url} answered with something that is not JSON ({e.Message}): it does not look like a Hugging Face Hub (check HF_ENDPOINT).", e);
            }
        }

        /// <summary>huggingface_hub's metadata request: HEAD without following the redirect to the LFS store
        /// (relative redirects of renamed repositories are followed).</summary>
        private async Task<FilePlan> HeadAsync(string file, string commit, CancellationToken ct)
        {
            var url = ResolveUrl(file, commit);
            for (int hop = 0; hop < 10; hop++)
            {
                using var response = await SendAsync(HttpMethod.Head, url, null, ct).ConfigureAwait(false);
                string? linkedEtag = Header(response, "X-Linked-Etag");
                int code = (int)response.StatusCode;
                if (code is >= 300 and < 400)
                {
                    var location = response.Headers.Location ?? throw new UllmeException($"{url} redirected without a Location header.");
                    var next = location.IsAbsoluteUri ? location : new Uri(url, location);
                    if (linkedEtag is null && next.Host == url.Host && next.Port == url.Port) { url = next; continue; }   // renamed repository
                    return Plan(file, response, linkedEtag, next, url);
                }
                if (!response.IsSuccessStatusCode) throw StatusError(response, url, file);
                return Plan(file, response, linkedEtag, url, url);
            }
            throw new UllmeException($"{ResolveUrl(file, commit)} redirected more than 10 times.");
        }

        private FilePlan Plan(string file, HttpResponseMessage response, string? linkedEtag, Uri downloadUrl, Uri asked)
        {
            string? etag = Normalize(linkedEtag ?? Header(response, "ETag"));
            if (string.IsNullOrEmpty(etag) || !ModelFiles.IsSafeRelative(etag) || etag.Contains('/'))
                throw new UllmeException($"{asked} answered without a usable ETag: it does not look like a Hugging Face Hub (check HF_ENDPOINT).");
            long? size = long.TryParse(Header(response, "X-Linked-Size"), out long linked) ? linked : response.Content.Headers.ContentLength;
            return new FilePlan(file, etag, size, linkedEtag is not null, downloadUrl);
        }

        private async Task FetchAsync(FilePlan plan, string commit, CancellationToken ct, Action<long> onBytes)
        {
            string blob = cache.BlobPath(id, plan.Etag);
            Directory.CreateDirectory(Path.GetDirectoryName(blob)!);
            string lockPath = cache.LockPath(id, plan.Etag);
            Directory.CreateDirectory(Path.GetDirectoryName(lockPath)!);
            using (await AcquireLockAsync(lockPath, ct).ConfigureAwait(false))
            {
                if (!(File.Exists(blob) && (plan.Size is null || new FileInfo(blob).Length == plan.Size)))
                    await DownloadBlobAsync(plan, blob, ct, onBytes).ConfigureAwait(false);
                cache.Link(id, commit, plan.File, plan.Etag);
            }
        }

        private async Task DownloadBlobAsync(FilePlan plan, string blob, CancellationToken ct, Action<long> onBytes)
        {
            string incomplete = blob + ".incomplete";
            Exception? last = null;
            for (int attempt = 1; attempt <= Attempts; attempt++)
            {
                long have = File.Exists(incomplete) ? new FileInfo(incomplete).Length : 0;
                if (plan.Size is long s && have > s) { File.Delete(incomplete); have = 0; }
                try
                {
                    if (plan.Size is not long size || have < size)
                        await DownloadRangeAsync(plan, incomplete, have, ct, onBytes).ConfigureAwait(false);
                    Verify(plan, incomplete);
                    File.Move(incomplete, blob, overwrite: true);
                    return;
                }
                catch (Exception e) when (e is HttpRequestException or IOException or TaskCanceledException or OperationCanceledException && !ct.IsCancellationRequested)
                {
                    last = e;   // the part stays in .incomplete; the next attempt asks for the rest
                    if (attempt < Attempts) await Task.Delay(TimeSpan.FromMilliseconds(200 * attempt), ct).ConfigureAwait(false);
                }
            }
            throw new UllmeException($"Downloading '{plan.File}' of '{id.RepoId}' from {plan.Url.GetLeftPart(UriPartial.Path)} failed {Attempts} times " +
                $"(last: {last!.Message}). What arrived is kept in '{incomplete}' and the next run resumes it.", last);
        }

        private async Task DownloadRangeAsync(FilePlan plan, string incomplete, long have, CancellationToken ct, Action<long> onBytes)
        {
            var url = plan.Url;
            HttpResponseMessage? response = null;
            try
            {
                for (int hop = 0; ; hop++)
                {
                    response = await SendAsync(HttpMethod.Get, url, have > 0 ? new RangeHeaderValue(have, null) : null, ct).ConfigureAwait(false);
                    int code = (int)response.StatusCode;
                    if (code is >= 300 and < 400 && response.Headers.Location is { } location && hop < 10)
                    {
                        url = location.IsAbsoluteUri ? location : new Uri(url, location);
                        response.Dispose();
                        continue;
                    }
                    break;
                }
                if (response.StatusCode == HttpStatusCode.RequestedRangeNotSatisfiable && plan.Size is long s && have == s) return;
                if (!response.IsSuccessStatusCode) throw StatusError(response, url, plan.File);
                bool append = have > 0 && response.StatusCode == HttpStatusCode.PartialContent
                              && response.Content.Headers.ContentRange is { From: long from } && from == have;
                using var file = new FileStream(incomplete, append ? FileMode.Append : FileMode.Create, FileAccess.Write, FileShare.None, 1 << 16);
                long written = append ? have : 0;
                onBytes(written);
                using var body = await response.Content.ReadAsStreamAsync(ct).ConfigureAwait(false);
                var buffer = new byte[1 << 16];
                long lastReport = written;
                while (true)
                {
                    int n;
                    using (var read = CancellationTokenSource.CreateLinkedTokenSource(ct))
                    {
                        read.CancelAfter(options.Timeout);
                        try
                        {
                            n = await body.ReadAsync(buffer, read.Token).ConfigureAwait(false);
                        }
                        catch (OperationCanceledException) when (!ct.IsCancellationRequested)
                        {
                            throw new IOException($"no data for {options.Timeout.TotalSeconds:0.#} s (HF_HUB_DOWNLOAD_TIMEOUT)");
                        }
                    }
                    if (n == 0) break;
                    await file.WriteAsync(buffer.AsMemory(0, n), ct).ConfigureAwait(false);
                    written += n;
                    if (written - lastReport >= ReportEvery) { onBytes(written); lastReport = written; }
                }
                await file.FlushAsync(ct).ConfigureAwait(false);
                file.Flush(flushToDisk: true);
                onBytes(written);
                if (plan.Size is long expected && written < expected)
                    throw new IOException($"the connection closed after {written:N0} of {expected:N0} bytes");
            }
            finally
            {
                response?.Dispose();
            }
        }

        private void Verify(FilePlan plan, string incomplete)
        {
            long length = new FileInfo(incomplete).Length;
            if (plan.Size is long size && length != size)
            {
                File.Delete(incomplete);
                throw new UllmeException($"'{plan.File}' of '{id.RepoId}' downloaded as {length:N0} bytes, but the Hub says {size:N0}: discarded; run again.");
            }
            if (plan.IsLfs && plan.Etag.Length == 64 && plan.Etag.All(Uri.IsHexDigit))
            {
                string actual;
                using (var stream = File.OpenRead(incomplete))
                    actual = Convert.ToHexStringLower(SHA256.HashData(stream));
                if (!string.Equals(actual, plan.Etag, StringComparison.OrdinalIgnoreCase))
                {
                    File.Delete(incomplete);
                    throw new UllmeException($"'{plan.File}' of '{id.RepoId}' downloaded with sha256 {actual}, but the Hub says {plan.Etag}: discarded (corrupt transfer); run again.");
                }
            }
        }

        private Uri ResolveUrl(string file, string commit) =>
            new($"{endpoint}/{id.RepoId}/resolve/{commit}/{string.Join('/', file.Split('/').Select(Uri.EscapeDataString))}");

        private async Task<HttpResponseMessage> SendAsync(HttpMethod method, Uri url, RangeHeaderValue? range, CancellationToken ct)
        {
            var request = new HttpRequestMessage(method, url);
            request.Headers.AcceptEncoding.Add(new StringWithQualityHeaderValue("identity"));
            request.Headers.Range = range;
            // The token goes to the Hub only, never to the store an LFS download is redirected to.
            if (options.Token is not null && string.Equals(url.Host, new Uri(endpoint).Host, StringComparison.OrdinalIgnoreCase))
                request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", options.Token);
            using var headers = CancellationTokenSource.CreateLinkedTokenSource(ct);
            headers.CancelAfter(options.Timeout);
            try
            {
                return await _http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, headers.Token).ConfigureAwait(false);
            }
            catch (Exception e) when (e is HttpRequestException or IOException || e is OperationCanceledException && !ct.IsCancellationRequested)
            {
                if (method == HttpMethod.Get && range is not null) throw new IOException(e.Message, e);   // mid-download: retried
                throw Unreachable(url, e);
            }
            finally
            {
                request.Dispose();
            }
        }

        private UllmeException Unreachable(Uri url, Exception e) => new(
            $"Cannot reach the Hugging Face Hub at {endpoint} to download '{id.RepoId}' (revision {_revision}): " +
            $"{(e is OperationCanceledException ? $"no answer from {url.GetLeftPart(UriPartial.Authority)} within {options.Timeout.TotalSeconds:0.#} s" : e.Message)}. " +
            $"{CachePart} Check the network or HF_ENDPOINT, set HF_HUB_OFFLINE=1 to use only the cache, or give a local model folder.", e);

        private UllmeException StatusError(HttpResponseMessage response, Uri url, string? file)
        {
            int code = (int)response.StatusCode;
            string? errorCode = Header(response, "X-Error-Code");
            string? errorMessage = Header(response, "X-Error-Message");
            string what = file is null ? $"'{id.RepoId}' (revision {_revision})" : $"'{file}' of '{id.RepoId}' (revision {_revision})";
            string said = errorMessage is null ? "" : $" (\"{errorMessage}\")";
            string token = options.Token is null ? "no token was sent: set HF_TOKEN to an access token that can read it" : "the token in HF_TOKEN was sent and refused: check that it can read this model";
            string message = code switch
            {
                401 => $"The Hugging Face Hub at {endpoint} refused {what} with 401 Unauthorized{said}: the model does not exist, is private, or is gated; {token}.",
                403 => $"The Hugging Face Hub at {endpoint} refused {what} with 403 Forbidden{said}: the model is gated; accept its conditions on {endpoint}/{id.RepoId} with your account and set HF_TOKEN to a token of that account.",
                404 when errorCode == "RevisionNotFound" || file is null && errorCode is null && id.Revision is not null =>
                    $"The Hugging Face Hub at {endpoint} has no revision '{_revision}' of '{id.RepoId}' (404{said}): check the branch, tag or commit after '@'.",
                404 when errorCode == "EntryNotFound" || file is not null => $"The Hugging Face Hub at {endpoint} has no {what} (404{said}).",
                404 => $"The Hugging Face Hub at {endpoint} has no model '{id.RepoId}' (404{said}): check the id (org/name), or give a local model folder.",
                _ => $"The Hugging Face Hub at {endpoint} answered {code} {response.ReasonPhrase} for {what}{said} ({url.GetLeftPart(UriPartial.Path)}).",
            };
            return new UllmeException($"{message} {CachePart}");
        }

        private static string? Header(HttpResponseMessage response, string name) =>
            response.Headers.TryGetValues(name, out var v) || response.Content.Headers.TryGetValues(name, out v) ? v.FirstOrDefault() : null;

        private static string? Normalize(string? etag)
        {
            if (etag is null) return null;
            etag = etag.Trim();
            if (etag.StartsWith("W/", StringComparison.Ordinal)) etag = etag[2..];
            return etag.Trim('"');
        }

        private static async Task<FileStream> AcquireLockAsync(string path, CancellationToken ct)
        {
            // Exclusive open = an advisory flock on Unix, the lock Python's filelock takes on the same file.
            var waited = System.Diagnostics.Stopwatch.StartNew();
            while (true)
            {
                try
                {
                    return new FileStream(path, FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None);
                }
                catch (IOException) when (waited.Elapsed < TimeSpan.FromHours(1))
                {
                    await Task.Delay(200, ct).ConfigureAwait(false);   // another process downloads this blob
                }
            }
        }

        private static HttpClient CreateClient(HubOptions options)
        {
            var handler = new SocketsHttpHandler
            {
                AllowAutoRedirect = false,
                AutomaticDecompression = DecompressionMethods.None,
                ConnectTimeout = options.Timeout,
            };
            var client = new HttpClient(handler, disposeHandler: true) { Timeout = System.Threading.Timeout.InfiniteTimeSpan };
            string version = typeof(HubDownloader).Assembly.GetName().Version?.ToString(3) ?? "0";
            client.DefaultRequestHeaders.UserAgent.ParseAdd($"ullme/{version}");
            return client;
        }
    }
}
