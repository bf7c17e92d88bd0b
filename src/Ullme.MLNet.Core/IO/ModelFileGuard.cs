using System.Text;
using System.Text.Json;

namespace Ullme.MLNet.IO;

/// <summary>
/// Reads the files of a model folder as if they came from a stranger: every file is checked before it is opened and
/// read with a bound, so a hostile folder is refused with one <see cref="UllmeException"/> naming the file instead of
/// hanging, reading without end or exhausting memory.
/// <list type="bullet">
/// <item>a symbolic link must resolve (a loop or a dangling link is refused);</item>
/// <item>the file must be a non-empty regular file: a device (<c>/dev/zero</c>), a pipe (FIFO, whose open would block),
/// a socket or a <c>/proc</c> file all report length 0 and are refused without being opened;</item>
/// <item>its length must not exceed the cap of its kind, checked before reading, and reading stops at the cap even
/// if the file grows meanwhile.</item>
/// </list>
/// </summary>
internal static class ModelFileGuard
{
    /// <summary>Cap for JSON settings files (config.json, tokenizer_config.json, modules.json, ...): real ones are a
    /// few KB, the largest tokenizer_config.json files (added tokens, chat templates) a few MB.</summary>
    public const long ConfigFileMaxBytes = 50L << 20;

    /// <summary>Cap for vocabulary files (tokenizer.json, tokenizer.model, vocab.txt, vocab.json, merges): the largest
    /// real tokenizer.json files are tens of MB.</summary>
    public const long TokenizerFileMaxBytes = 500L << 20;

    /// <summary>No cap: weights files (their headers are validated against their length instead).</summary>
    public const long Unbounded = long.MaxValue;

    /// <summary>Nesting limit for the JSON settings files (real ones nest 3 or 4 levels deep).</summary>
    public const int ConfigMaxDepth = 64;

    /// <summary>
    /// Whether <paramref name="path"/> names something: false when nothing is there; true for an existing regular
    /// file. Throws for anything present that cannot be read safely (a link loop, a dangling link, a directory, a
    /// device or pipe, a file over <paramref name="maxBytes"/>), so an optional file that is hostile is refused rather
    /// than silently skipped.
    /// </summary>
    public static bool Exists(string path, long maxBytes)
    {
        var info = new FileInfo(path);
        if (!info.Exists && info.LinkTarget is null && !Directory.Exists(path)) return false;
        Check(path, maxBytes);
        return true;
    }

    /// <summary>Checks that <paramref name="path"/> is a readable regular file of at most <paramref name="maxBytes"/>
    /// bytes; returns its length.</summary>
    public static long Check(string path, long maxBytes)
    {
        var info = new FileInfo(path);
        FileSystemInfo target = info;
        if (info.LinkTarget is not null)
        {
            try
            {
                target = info.ResolveLinkTarget(returnFinalTarget: true) ?? info;
            }
            catch (IOException e)
            {
                throw new UllmeException($"'{path}' is a symbolic link that cannot be resolved (a link loop?): {e.Message}", e);
            }
            target.Refresh();
            if (!target.Exists && !Directory.Exists(target.FullName))
                throw new UllmeException($"'{path}' is a symbolic link to '{target.FullName}', which does not exist.");
        }
        if (Directory.Exists(target.FullName))
            throw new UllmeException($"'{path}' is a directory, not a file.");
        if (!target.Exists)
            throw new UllmeException($"'{path}' does not exist.");
        string full = target.FullName;
        if (full.StartsWith("/dev/", StringComparison.Ordinal) || full.StartsWith("/proc/", StringComparison.Ordinal)
            || full.StartsWith("/sys/", StringComparison.Ordinal))
            throw new UllmeException($"'{path}' is not a regular file (it is '{full}', a device or kernel file): refusing to read it.");
        long length = ((FileInfo)target).Length;
        if (length == 0)
            throw new UllmeException($"'{path}' is empty or is not a regular file (a device, pipe or socket): refusing to read it.");
        if (length > maxBytes)
            throw new UllmeException($"'{path}' is {length:N0} bytes, more than the {maxBytes / (1024 * 1024)} MB a file of its kind may have (corrupt or hostile file).");
        return length;
    }

    /// <summary>Reads a whole file after <see cref="Check"/>, never more than <paramref name="maxBytes"/>.</summary>
    public static byte[] ReadAllBytes(string path, long maxBytes)
    {
        long length = Check(path, maxBytes);
        try
        {
            using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1, FileOptions.SequentialScan);
            var buffer = new MemoryStream((int)Math.Min(length, Array.MaxLength));
            var chunk = new byte[1 << 16];
            int n;
            while ((n = stream.Read(chunk, 0, chunk.Length)) > 0)
            {
                if (buffer.Length + n > maxBytes)
                    throw new UllmeException($"'{path}' grew beyond the {maxBytes / (1024 * 1024)} MB a file of its kind may have while it was read.");
                buffer.Write(chunk, 0, n);
            }
            return buffer.ToArray();
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new UllmeException($"Cannot read '{path}': {e.Message}", e);
        }
    }

    /// <summary><see cref="ReadAllBytes"/> decoded as UTF-8 (a BOM is skipped).</summary>
    public static string ReadAllText(string path, long maxBytes)
    {
        byte[] bytes = ReadAllBytes(path, maxBytes);
        var span = bytes.AsSpan();
        if (span.StartsWith(Encoding.UTF8.Preamble)) span = span[Encoding.UTF8.Preamble.Length..];
        return Encoding.UTF8.GetString(span);
    }

    /// <summary>Opens a file for reading after <see cref="Check"/>; the stream ends at <paramref name="maxBytes"/>.</summary>
    public static Stream OpenRead(string path, long maxBytes)
    {
        long length = Check(path, maxBytes);
        try
        {
            var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 16, FileOptions.SequentialScan);
            return new BoundedStream(stream, Math.Min(maxBytes, length), path);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new UllmeException($"Cannot read '{path}': {e.Message}", e);
        }
    }

    /// <summary>Reads the lines of a text file opened with <see cref="OpenRead"/>.</summary>
    public static IEnumerable<string> ReadLines(string path, long maxBytes)
    {
        using var reader = new StreamReader(OpenRead(path, maxBytes), Encoding.UTF8, detectEncodingFromByteOrderMarks: true);
        while (reader.ReadLine() is { } line) yield return line;
    }

    /// <summary>
    /// Parses a JSON settings file (after <see cref="ReadAllBytes"/>). Invalid JSON, or JSON nested deeper than
    /// <paramref name="maxDepth"/>, is one <see cref="UllmeException"/> naming the file; the JsonException is kept
    /// as the inner exception.
    /// </summary>
    public static JsonDocument ParseJson(string path, long maxBytes, int maxDepth = ConfigMaxDepth, bool allowTrailingCommas = true)
    {
        byte[] bytes = ReadAllBytes(path, maxBytes);
        try
        {
            return JsonDocument.Parse(bytes, new JsonDocumentOptions
            {
                MaxDepth = maxDepth, AllowTrailingCommas = allowTrailingCommas, CommentHandling = JsonCommentHandling.Skip,
            });
        }
        catch (JsonException e)
        {
            throw new UllmeException($"'{path}' is not valid JSON: {e.Message}", e);
        }
    }

    /// <summary>A read-only view of a stream that ends after <c>limit</c> bytes (bounded reading of a file whose
    /// length was checked, in case it grows).</summary>
    private sealed class BoundedStream(Stream inner, long limit, string path) : Stream
    {
        private long _read;

        public override bool CanRead => true;
        public override bool CanSeek => false;
        public override bool CanWrite => false;
        public override long Length => throw new NotSupportedException();
        public override long Position { get => _read; set => throw new NotSupportedException(); }
        public override void Flush() { }
        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
        public override void SetLength(long value) => throw new NotSupportedException();
        public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();

        public override int Read(byte[] buffer, int offset, int count)
        {
            if (_read >= limit) return 0;
            int n = inner.Read(buffer, offset, (int)Math.Min(count, limit - _read));
            _read += n;
            return n;
        }

        protected override void Dispose(bool disposing)
        {
            if (disposing) inner.Dispose();
            base.Dispose(disposing);
        }

        public override string ToString() => path;
    }
}
