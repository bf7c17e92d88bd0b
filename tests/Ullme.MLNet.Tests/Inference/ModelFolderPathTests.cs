using System.Text.Json;
using Ullme.MLNet.Inference;
using Ullme.MLNet.IO;
using Ullme.MLNet.Modeling;
using Ullme.MLNet.Tests.Infrastructure;
using static TorchSharp.torch;

namespace Ullme.MLNet.Tests.Inference;

/// <summary>
/// Model folders spelled as users type them (<c>--model ./Qwen2-0.5B/</c>): every path comparison goes through
/// <see cref="PathGuard"/>, so a trailing slash, <c>./</c> or <c>x/../x</c> name the same folder, and a sibling whose
/// name merely starts with the folder's (<c>/tmp/model-evil</c> vs <c>/tmp/model</c>) is still outside it.
/// </summary>
[Collection(TorchCollection.Name)]
public sealed class ModelFolderPathTests : IDisposable
{
    private static readonly string Sep = Path.DirectorySeparatorChar.ToString();
    private readonly string _dir = Directory.CreateTempSubdirectory("ullme-paths-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Fact]
    public void PathGuardComparesNormalisedPathsAndContainmentEndsInASeparator()
    {
        string model = Path.Combine(_dir, "model");
        Assert.True(PathGuard.Same(model, model + Sep));
        Assert.True(PathGuard.Same(model + Sep, Path.Combine(model, "..", "model")));
        Assert.True(PathGuard.IsInside(Path.Combine(model, "a.safetensors"), model + Sep));
        Assert.True(PathGuard.IsInside(Path.Combine(model, "sub", "b"), Path.Combine(model, "..", "model") + Sep));
        Assert.False(PathGuard.IsInside(Path.Combine(_dir, "model-evil", "a.safetensors"), model));
        Assert.False(PathGuard.IsInside(Path.Combine(_dir, "model-evil", "a.safetensors"), model + Sep));
        Assert.False(PathGuard.IsInside(_dir + Sep + "model-evil", model));
        Assert.False(PathGuard.IsInside(model, model + Sep));        // the folder itself is not inside itself
        Assert.True(PathGuard.IsSameOrInside(model + Sep, model));
        Assert.True(PathGuard.IsInside(model, Path.GetPathRoot(model)!)); // a root keeps its own separator

        Assert.Equal(Path.Combine(model, "x.safetensors"), PathGuard.ResolveInside(model + Sep, "x.safetensors"));
        Assert.Equal(Path.Combine(model, "1_Pooling", "config.json"), PathGuard.ResolveInside(model + Sep, "./1_Pooling/config.json"));
        Assert.Null(PathGuard.ResolveInside(model, "../model-evil/x.safetensors"));
        Assert.Null(PathGuard.ResolveInside(model, ".."));
        Assert.Null(PathGuard.ResolveInside(model, Path.Combine(model, "x.safetensors"))); // rooted
    }

    /// <summary>
    /// The real stories260K checkpoint split over two shards with a Hugging Face index, loaded through
    /// <see cref="UllmeModel.Load"/> by each spelling of its folder: every one loads and embeds exactly as the
    /// single-file original; saving back into the folder spelled differently does not copy files onto themselves.
    /// </summary>
    [AssetFact]
    public void ShardedCheckpointLoadsWhateverTheFolderSpelling()
    {
        string folder = Path.Combine(_dir, "stories-sharded");
        Directory.CreateDirectory(folder);
        foreach (string f in Directory.GetFiles(Assets.Stories260K))
            if (!f.EndsWith(".safetensors", StringComparison.Ordinal)) File.Copy(f, Path.Combine(folder, Path.GetFileName(f)));

        string[] texts = ["Once upon a time there was a cat.", "The dog ran to the park."];
        float[][] expected;
        using (var original = UllmeModel.Load(Assets.Stories260K))
        {
            expected = new EmbeddingEngine(original).Embed(texts);
            using var scope = NewDisposeScope();
            var tensors = original.Backbone.state_dict().Select(kv => new KeyValuePair<string, Tensor>(kv.Key, kv.Value.detach().cpu().contiguous())).ToList();
            Assert.True(tensors.Count >= 2);
            var first = tensors.Take(tensors.Count / 2).ToList();
            var second = tensors.Skip(tensors.Count / 2).ToList();
            const string s1 = "model-00001-of-00002.safetensors", s2 = "model-00002-of-00002.safetensors";
            SafeTensors.Save(Path.Combine(folder, s1), first);
            SafeTensors.Save(Path.Combine(folder, s2), second);
            var map = first.ToDictionary(kv => kv.Key, _ => s1);
            foreach (var kv in second) map[kv.Key] = s2;
            File.WriteAllText(Path.Combine(folder, CheckpointLoader.IndexFileName),
                JsonSerializer.Serialize(new { metadata = new { total_size = 0 }, weight_map = map }));
        }

        string relative = Path.GetRelativePath(Environment.CurrentDirectory, folder);
        foreach (string spelling in new[] { folder + Sep, "." + Sep + relative + Sep, Path.Combine(folder, "..", "stories-sharded") })
        {
            using var model = UllmeModel.Load(spelling);
            Assert.Equal(folder, model.SourceFolder);
            var actual = new EmbeddingEngine(model).Embed(texts);
            for (int i = 0; i < texts.Length; i++) Assert.Equal(expected[i], actual[i]);
        }

        // Saving a model into its own folder, spelled with a trailing slash, rewrites the weights and keeps the
        // tokenizer files (they are not copied onto themselves).
        using (var model = UllmeModel.Load(folder))
            model.SaveFolder(folder + Sep);
        Assert.True(new FileInfo(Path.Combine(folder, "tokenizer.model")).Length > 0);
        using (var reloaded = UllmeModel.Load(folder + Sep))
        {
            var again = new EmbeddingEngine(reloaded).Embed(texts);
            for (int i = 0; i < texts.Length; i++) Assert.Equal(expected[i], again[i]);
        }
    }
}
