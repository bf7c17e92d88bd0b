using System.Collections.Concurrent;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Logging;

namespace Ullme.MLNet.Tests.Hub;

/// <summary>
/// A Hugging Face Hub on 127.0.0.1 (Kestrel, free port) serving the routes huggingface_hub uses to download a model:
/// <c>GET /api/models/{org}/{name}/revision/{rev}</c> (sha + siblings), <c>HEAD|GET /{org}/{name}/resolve/{rev}/{file}</c>
/// (regular files: 200 with a git-sha1 ETag; LFS files (*.safetensors, *.bin): 302 to <c>/lfs/{sha256}</c> with
/// X-Linked-Etag, X-Linked-Size, X-Repo-Commit) and <c>GET /lfs/{sha256}</c>, all with HTTP Range. Errors as the
/// Hub gives them: 404 + X-Error-Code RepoNotFound / RevisionNotFound / EntryNotFound, 401 without the required token,
/// 403 for gated repositories. Counts every request and the bytes served per file.
/// </summary>
internal sealed class FakeHub : IAsyncDisposable
{
    private sealed record Commit(string Sha, Dictionary<string, byte[]> Files);

    private readonly Dictionary<string, Dictionary<string, Commit>> _repos = new(StringComparer.Ordinal);
    private readonly ConcurrentDictionary<string, byte[]> _lfs = new(StringComparer.Ordinal);
    private WebApplication? _app;

    /// <summary>Every request, as "METHOD path [Range]" (the Range header value when one was sent).</summary>
    public ConcurrentQueue<string> Requests { get; } = new();

    /// <summary>Authorization headers received.</summary>
    public ConcurrentQueue<string> Authorizations { get; } = new();

    /// <summary>Body bytes served per repository file path (LFS downloads counted under their file name).</summary>
    public ConcurrentDictionary<string, long> BytesServed { get; } = new(StringComparer.Ordinal);

    /// <summary>When set, every /api and /resolve request needs "Authorization: Bearer {token}" (else 401).</summary>
    public string? RequiredToken { get; set; }

    /// <summary>Repositories whose files answer 403 (gated, access not granted).</summary>
    public HashSet<string> Gated { get; } = new(StringComparer.Ordinal);

    /// <summary>The next download of this file's body stops after this many bytes and the connection is cut.</summary>
    public (string File, int Bytes)? AbortOnce { get; set; }

    /// <summary>Serves this file's LFS body with one byte changed (a corrupt transfer).</summary>
    public string? CorruptFile { get; set; }

    /// <summary>Serve only the first Bytes of File, then hold the connection open until the client goes away (a
    /// download that takes forever: what a user interrupts with Ctrl+C).</summary>
    public (string File, int Bytes)? StallAt { get; set; }

    public string Endpoint { get; private set; } = "";

    /// <summary>Publishes the files of <paramref name="folder"/> (recursively) as a commit of <paramref name="repoId"/>,
    /// reachable as <paramref name="branch"/> and its hash; returns the hash.</summary>
    public string Publish(string repoId, string folder, string branch = "main")
    {
        var files = Directory.EnumerateFiles(folder, "*", SearchOption.AllDirectories)
            .ToDictionary(f => Path.GetRelativePath(folder, f).Replace('\\', '/'), File.ReadAllBytes, StringComparer.Ordinal);
        using var sha1 = IncrementalHash.CreateHash(HashAlgorithmName.SHA1);
        foreach (var (name, bytes) in files.OrderBy(f => f.Key, StringComparer.Ordinal))
        {
            sha1.AppendData(Encoding.UTF8.GetBytes(name));
            sha1.AppendData(bytes);
        }
        sha1.AppendData(Encoding.UTF8.GetBytes(repoId + branch));
        string sha = Convert.ToHexStringLower(sha1.GetHashAndReset());
        var commit = new Commit(sha, files);
        if (!_repos.TryGetValue(repoId, out var refs)) _repos[repoId] = refs = new(StringComparer.Ordinal);
        refs[branch] = commit;
        refs[sha] = commit;
        foreach (var (name, bytes) in files)
            if (IsLfs(name)) _lfs[Sha256(bytes)] = bytes;
        return sha;
    }

    public static bool IsLfs(string file) => file.EndsWith(".safetensors", StringComparison.Ordinal) || file.EndsWith(".bin", StringComparison.Ordinal);

    public static string Sha256(byte[] bytes) => Convert.ToHexStringLower(SHA256.HashData(bytes));

    /// <summary>The git blob id of a regular file, the ETag the Hub gives it.</summary>
    public static string GitSha1(byte[] bytes) =>
        Convert.ToHexStringLower(SHA1.HashData([.. Encoding.ASCII.GetBytes($"blob {bytes.Length}\0"), .. bytes]));

    public async Task StartAsync()
    {
        var builder = WebApplication.CreateSlimBuilder();
        builder.Logging.ClearProviders();
        builder.WebHost.UseUrls("http://127.0.0.1:0");
        var app = builder.Build();
        app.Run(HandleAsync);
        await app.StartAsync();
        _app = app;
        Endpoint = app.Urls.Single().TrimEnd('/');
    }

    public async Task StopAsync()
    {
        if (_app is null) return;
        await _app.StopAsync();
        await _app.DisposeAsync();
        _app = null;
    }

    public async ValueTask DisposeAsync() => await StopAsync();

    private async Task HandleAsync(HttpContext context)
    {
        var request = context.Request;
        string path = Uri.UnescapeDataString(request.Path.Value ?? "");
        string range = request.Headers.Range.ToString();
        Requests.Enqueue($"{request.Method} {path}{(range.Length > 0 ? " " + range : "")}");
        string auth = request.Headers.Authorization.ToString();
        if (auth.Length > 0) Authorizations.Enqueue(auth);
        var response = context.Response;

        if (path.StartsWith("/lfs/", StringComparison.Ordinal))
        {
            if (!_lfs.TryGetValue(path[5..], out var blob)) { response.StatusCode = 404; return; }
            string file = _repos.Values.SelectMany(r => r.Values).SelectMany(c => c.Files).First(f => Sha256(f.Value) == path[5..]).Key;
            await ServeAsync(context, file, blob, corrupt: CorruptFile == file);
            return;
        }

        bool api = path.StartsWith("/api/models/", StringComparison.Ordinal);
        string rest = api ? path["/api/models/".Length..] : path.TrimStart('/');
        string[] parts = rest.Split('/');
        if (parts.Length < 4 || parts[2] != (api ? "revision" : "resolve")) { response.StatusCode = 400; return; }
        string repoId = parts[0] + "/" + parts[1];
        if (RequiredToken is not null && auth != "Bearer " + RequiredToken)
        {
            response.StatusCode = 401;
            response.Headers["X-Error-Code"] = "RepoNotFound";
            response.Headers["X-Error-Message"] = "Invalid username or password.";
            return;
        }
        if (!_repos.TryGetValue(repoId, out var refs))
        {
            response.StatusCode = 404;
            response.Headers["X-Error-Code"] = "RepoNotFound";
            response.Headers["X-Error-Message"] = "Repository not found";
            return;
        }
        // a revision may hold '/' (refs/pr/1): the longest known revision that prefixes the rest
        string afterKind = string.Join('/', parts[3..]);
        string? revision = refs.Keys.Where(r => afterKind == r || afterKind.StartsWith(r + "/", StringComparison.Ordinal)).MaxBy(r => r.Length);
        if (revision is null)
        {
            response.StatusCode = 404;
            response.Headers["X-Error-Code"] = "RevisionNotFound";
            response.Headers["X-Error-Message"] = $"Invalid rev id: {afterKind}";
            return;
        }
        var commit = refs[revision];
        if (api)
        {
            response.ContentType = "application/json";
            await response.WriteAsync(JsonSerializer.Serialize(new
            {
                id = repoId, sha = commit.Sha,
                siblings = commit.Files.Keys.Order(StringComparer.Ordinal).Select(f => new { rfilename = f }),
            }));
            return;
        }
        if (Gated.Contains(repoId))
        {
            response.StatusCode = 403;
            response.Headers["X-Error-Code"] = "GatedRepo";
            response.Headers["X-Error-Message"] = "Access to model is restricted.";
            return;
        }
        string fileName = afterKind.Length > revision.Length ? afterKind[(revision.Length + 1)..] : "";
        if (!commit.Files.TryGetValue(fileName, out var bytes))
        {
            response.StatusCode = 404;
            response.Headers["X-Error-Code"] = "EntryNotFound";
            response.Headers["X-Error-Message"] = "Entry not found";
            return;
        }
        response.Headers["X-Repo-Commit"] = commit.Sha;
        if (IsLfs(fileName))
        {
            string sha256 = Sha256(bytes);
            response.StatusCode = 302;
            response.Headers.Location = $"{Endpoint}/lfs/{sha256}";
            response.Headers["X-Linked-Etag"] = $"\"{sha256}\"";
            response.Headers["X-Linked-Size"] = bytes.Length.ToString();
            response.Headers.ETag = $"\"{GitSha1(Encoding.ASCII.GetBytes("pointer " + sha256))}\"";
            return;
        }
        response.Headers.ETag = $"\"{GitSha1(bytes)}\"";
        await ServeAsync(context, fileName, bytes, corrupt: false);
    }

    private async Task ServeAsync(HttpContext context, string file, byte[] bytes, bool corrupt)
    {
        var response = context.Response;
        long from = 0;
        string range = context.Request.Headers.Range.ToString();
        if (range.StartsWith("bytes=", StringComparison.Ordinal) && range.EndsWith('-') && long.TryParse(range[6..^1], out long start))
        {
            if (start >= bytes.Length) { response.StatusCode = 416; return; }
            from = start;
            response.StatusCode = 206;
            response.Headers.ContentRange = $"bytes {from}-{bytes.Length - 1}/{bytes.Length}";
        }
        response.ContentLength = bytes.Length - from;
        response.Headers.AcceptRanges = "bytes";
        if (HttpMethods.IsHead(context.Request.Method)) return;
        var body = bytes.AsMemory((int)from);
        if (corrupt)
        {
            var copy = body.ToArray();
            copy[copy.Length / 2] ^= 0xFF;
            body = copy;
        }
        if (AbortOnce is { } abort && abort.File == file)
        {
            AbortOnce = null;
            int n = Math.Min(abort.Bytes, body.Length);
            await response.Body.WriteAsync(body[..n]);
            await response.Body.FlushAsync();
            BytesServed.AddOrUpdate(file, n, (_, v) => v + n);
            await Task.Delay(50);
            context.Abort();
            return;
        }
        if (StallAt is { } stall && stall.File == file)
        {
            int n = Math.Min(stall.Bytes, body.Length);
            await response.Body.WriteAsync(body[..n]);
            await response.Body.FlushAsync();
            BytesServed.AddOrUpdate(file, n, (_, v) => v + n);
            try
            {
                await Task.Delay(Timeout.Infinite, context.RequestAborted);
            }
            catch (OperationCanceledException)
            {
            }
            return;
        }
        await response.Body.WriteAsync(body);
        BytesServed.AddOrUpdate(file, body.Length, (_, v) => v + body.Length);
    }
}
