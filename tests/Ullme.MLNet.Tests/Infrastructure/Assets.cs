namespace Ullme.MLNet.Tests.Infrastructure;

/// <summary>
/// The shared assets folder (models, tokenizers, datasets) that is never copied into the repository.
/// Set by <c>ULLME_ASSETS</c>; defaults to <c>../shared</c> next to the repository root.
/// </summary>
public static class Assets
{
    public static string Root { get; } = ResolveRoot();

    public static bool Available => Directory.Exists(Root);

    public static string SkipReason => $"shared assets not found at '{Root}' (set ULLME_ASSETS to the shared folder)";

    public static string Path(params string[] parts) => System.IO.Path.Combine([Root, .. parts]);

    public static string Stories260K => Path("models", "stories260K");

    private static string ResolveRoot()
    {
        string? env = Environment.GetEnvironmentVariable("ULLME_ASSETS");
        if (!string.IsNullOrEmpty(env)) return System.IO.Path.GetFullPath(env);
        // Walk up from the test binary to the repository root (the folder holding Ullme.MLNet.sln), then ../shared.
        var dir = new DirectoryInfo(AppContext.BaseDirectory);
        while (dir is not null && !File.Exists(System.IO.Path.Combine(dir.FullName, "Ullme.MLNet.sln"))) dir = dir.Parent;
        string repo = dir?.FullName ?? Directory.GetCurrentDirectory();
        return System.IO.Path.GetFullPath(System.IO.Path.Combine(repo, "..", "shared"));
    }
}

/// <summary>A fact that needs the shared assets; skipped with a reason when they are absent.</summary>
public sealed class AssetFactAttribute : FactAttribute
{
    public AssetFactAttribute()
    {
        if (!Assets.Available) Skip = Assets.SkipReason;
    }
}

/// <summary>A theory that needs the shared assets; skipped with a reason when they are absent.</summary>
public sealed class AssetTheoryAttribute : TheoryAttribute
{
    public AssetTheoryAttribute()
    {
        if (!Assets.Available) Skip = Assets.SkipReason;
    }
}

/// <summary>
/// Tests that touch global torch state (threads, default dtype, RNG, dispose-scope statistics) run in this one
/// collection, never in parallel with each other.
/// </summary>
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class TorchCollection
{
    public const string Name = "torch";
}
