using Ullme.MLNet.Hub;

namespace Ullme.MLNet.Tests.Hub;

/// <summary>Model id parsing and the environment variables, read as huggingface_hub reads them.</summary>
public sealed class HubSettingsTests
{
    [Theory]
    [InlineData("Qwen/Qwen2-0.5B", "Qwen", "Qwen2-0.5B", null)]
    [InlineData("BAAI/bge-small-en-v1.5", "BAAI", "bge-small-en-v1.5", null)]
    [InlineData("intfloat/e5-mistral-7b-instruct@main", "intfloat", "e5-mistral-7b-instruct", "main")]
    [InlineData("org/name@refs/pr/1", "org", "name", "refs/pr/1")]
    [InlineData("sentence-transformers/all-MiniLM-L6-v2@c9745ed1d9f207416be6d2e6f8de32d1f16199bf", "sentence-transformers", "all-MiniLM-L6-v2", "c9745ed1d9f207416be6d2e6f8de32d1f16199bf")]
    public void IdsParse(string text, string org, string name, string? revision)
    {
        Assert.True(HubModelId.TryParse(text, out var id));
        Assert.Equal((org, name, revision), (id.Organization, id.Name, id.Revision));
    }

    [Theory]
    [InlineData("default")]
    [InlineData("gpt2")]
    [InlineData("./Qwen2-0.5B")]
    [InlineData("../org/name")]
    [InlineData("/models/Qwen2-0.5B")]
    [InlineData("models/Qwen2-0.5B/")]
    [InlineData("a/b/c")]
    [InlineData("org/-name")]
    [InlineData("org/na--me")]
    [InlineData("org/na..me")]
    [InlineData("C:/models")]
    [InlineData("org\\name")]
    [InlineData("org/name@")]
    [InlineData("org/name@../../etc")]
    [InlineData("org/name@a b")]
    public void PathsAndMalformedIdsAreNotIds(string text) => Assert.False(HubModelId.TryParse(text, out _));

    [Fact]
    public void EnvironmentIsReadAsHuggingFaceHubReadsIt()
    {
        string home = Environment.GetFolderPath(Environment.SpecialFolder.UserProfile);
        var none = HubOptions.FromEnvironment(_ => null);
        Assert.Equal("https://huggingface.co", none.Endpoint);
        Assert.Equal(Path.Combine(home, ".cache", "huggingface", "hub"), none.CacheFolder);
        Assert.False(none.Offline);

        string dir = Directory.CreateTempSubdirectory("ullme-hfhome-").FullName;
        try
        {
            File.WriteAllText(Path.Combine(dir, "token"), "hf_from_login\n");
            var env = new Dictionary<string, string> { ["HF_HOME"] = dir, ["HF_ENDPOINT"] = "http://mirror.local/", ["HF_HUB_OFFLINE"] = "1" };
            var o = HubOptions.FromEnvironment(k => env.GetValueOrDefault(k));
            Assert.Equal(Path.Combine(dir, "hub"), o.CacheFolder);
            Assert.Equal("http://mirror.local", o.Endpoint);
            Assert.Equal("hf_from_login", o.Token);
            Assert.True(o.Offline);

            env["HF_HUB_CACHE"] = Path.Combine(dir, "elsewhere");
            env["HF_TOKEN"] = "hf_env";
            env["HF_HUB_OFFLINE"] = "0";
            o = HubOptions.FromEnvironment(k => env.GetValueOrDefault(k));
            Assert.Equal(Path.Combine(dir, "elsewhere"), o.CacheFolder);
            Assert.Equal("hf_env", o.Token);
            Assert.False(o.Offline);

            var xdg = HubOptions.FromEnvironment(k => k == "XDG_CACHE_HOME" ? dir : null);
            Assert.Equal(Path.Combine(dir, "huggingface", "hub"), xdg.CacheFolder);
            foreach (string yes in new[] { "true", "ON", "yes" })
                Assert.True(HubOptions.FromEnvironment(k => k == "HF_HUB_OFFLINE" ? yes : null).Offline);
            Assert.Throws<UllmeException>(() => HubOptions.FromEnvironment(k => k == "HF_HUB_DOWNLOAD_TIMEOUT" ? "soon" : null));
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }
}
