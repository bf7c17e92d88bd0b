namespace Ullme.MLNet.Hub;

/// <summary>
/// Where Hugging Face model ids (<c>org/name</c>, <c>org/name@revision</c>) are looked up and downloaded, read the way
/// Python's <c>huggingface_hub</c> reads them by <see cref="FromEnvironment()"/> (what a load uses unless
/// <see cref="Inference.ModelLoadOptions.Hub"/> is set). A <c>new HubOptions()</c> ignores the environment:
/// huggingface.co, <c>~/.cache/huggingface/hub</c>, no token, online.
/// </summary>
public sealed record HubOptions
{
    /// <summary>The Hub's address: <c>HF_ENDPOINT</c>, else <c>https://huggingface.co</c>.</summary>
    public string Endpoint { get; init; } = DefaultEndpoint;

    /// <summary>The cache folder holding <c>models--org--name</c>: <c>HF_HUB_CACHE</c>, else <c>HF_HOME/hub</c>,
    /// else <c>$XDG_CACHE_HOME/huggingface/hub</c>, else <c>~/.cache/huggingface/hub</c> (the default).</summary>
    public string CacheFolder { get; init; } = DefaultCacheFolder(_ => null);

    /// <summary>Access token sent as <c>Authorization: Bearer</c> (gated and private models): <c>HF_TOKEN</c>, else
    /// the file written by <c>huggingface-cli login</c> (<c>HF_TOKEN_PATH</c>, else <c>HF_HOME/token</c>); null = none.</summary>
    public string? Token { get; init; }

    /// <summary>True (<c>HF_HUB_OFFLINE=1</c>): only the cache is read, nothing is requested.</summary>
    public bool Offline { get; init; }

    /// <summary>How long a connection or a read may stall before the download is abandoned
    /// (<c>HF_HUB_DOWNLOAD_TIMEOUT</c> seconds, default 10).</summary>
    public TimeSpan Timeout { get; init; } = TimeSpan.FromSeconds(10);

    /// <summary>https://huggingface.co</summary>
    public const string DefaultEndpoint = "https://huggingface.co";

    /// <summary>The settings of the process environment, read as huggingface_hub reads them.</summary>
    public static HubOptions FromEnvironment() => FromEnvironment(Environment.GetEnvironmentVariable);

    /// <summary>The settings from <paramref name="variables"/> (a name → value lookup; null = unset).</summary>
    public static HubOptions FromEnvironment(Func<string, string?> variables)
    {
        ArgumentNullException.ThrowIfNull(variables);
        string? Get(string name) => variables(name) is { Length: > 0 } v ? v : null;
        string home = HfHome(Get);
        string? token = Get("HF_TOKEN") ?? Get("HUGGING_FACE_HUB_TOKEN");
        if (token is null)
        {
            string tokenFile = Get("HF_TOKEN_PATH") ?? Path.Combine(home, "token");
            try
            {
                if (File.Exists(tokenFile)) token = File.ReadAllText(tokenFile).Trim() is { Length: > 0 } t ? t : null;
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                token = null;   // an unreadable token file is the same as none, as in huggingface_hub
            }
        }
        var timeout = TimeSpan.FromSeconds(10);
        if (Get("HF_HUB_DOWNLOAD_TIMEOUT") is string t0)
        {
            if (!double.TryParse(t0, System.Globalization.NumberStyles.Float, System.Globalization.CultureInfo.InvariantCulture, out double seconds) || seconds <= 0 || seconds > 86400)
                throw new UllmeException($"HF_HUB_DOWNLOAD_TIMEOUT must be a number of seconds above 0 (got '{t0}').");
            timeout = TimeSpan.FromSeconds(seconds);
        }
        return new HubOptions
        {
            Endpoint = (Get("HF_ENDPOINT") ?? DefaultEndpoint).TrimEnd('/'),
            CacheFolder = DefaultCacheFolder(Get),
            Token = token,
            Offline = IsTrue(Get("HF_HUB_OFFLINE")),
            Timeout = timeout,
        };
    }

    private static string DefaultCacheFolder(Func<string, string?> get) =>
        Path.GetFullPath(Expand(get("HF_HUB_CACHE") ?? get("HUGGINGFACE_HUB_CACHE") ?? Path.Combine(HfHome(get), "hub")));

    private static string HfHome(Func<string, string?> get) =>
        Expand(get("HF_HOME") ?? Path.Combine(get("XDG_CACHE_HOME") ?? Path.Combine(UserHome(), ".cache"), "huggingface"));

    private static string UserHome() => Environment.GetFolderPath(Environment.SpecialFolder.UserProfile);

    private static string Expand(string path) =>
        path == "~" ? UserHome() : path.StartsWith("~/", StringComparison.Ordinal) ? Path.Combine(UserHome(), path[2..]) : path;

    /// <summary>huggingface_hub's truthy values: 1, ON, YES, TRUE (any case).</summary>
    private static bool IsTrue(string? value) =>
        value is not null && value.Trim().ToUpperInvariant() is "1" or "ON" or "YES" or "TRUE";
}

/// <summary>Progress of a model download: the file being fetched and the bytes done so far.</summary>
/// <param name="ModelId">The Hub id (<c>org/name</c>).</param>
/// <param name="File">The file being downloaded (path inside the repository).</param>
/// <param name="FileIndex">Its number, 1-based, among <paramref name="FileCount"/> files still to download.</param>
/// <param name="FileCount">Files to download in this load (those already cached are not counted).</param>
/// <param name="BytesDone">Bytes of all those files present so far (a resumed part included).</param>
/// <param name="BytesTotal">Bytes of all those files together.</param>
public readonly record struct ModelDownloadProgress(string ModelId, string File, int FileIndex, int FileCount, long BytesDone, long BytesTotal);
