using System.Diagnostics;
using System.IO.Compression;
using System.Reflection;
using System.Text;
using Microsoft.ML;
using Microsoft.ML.Data;
using Ullme.MLNet.Transforms;
using Ullme.MLNet.Tests.Infrastructure;

namespace Ullme.MLNet.Tests.MLNetIntegration;

/// <summary>mlContext.Model.Save / Load of pipelines containing UllmeEmbed: self-contained zips, identical embeddings,
/// loading in a brand-new process, and clear errors for future or damaged zips.</summary>
[Collection(TorchCollection.Name)]
public sealed class UllmeModelSaveLoadTests
{
    /// <summary>Fits UllmeEmbed on a private copy of the default model folder, saves the zip, deletes the folder.</summary>
    private static (string Zip, ITransformer Original, DataViewSchema Schema) SaveWithModelFolderDeleted(MLContext ml, string dir)
    {
        string folder = Path.Combine(dir, "model");
        MLNetTestData.Default.SaveFolder(folder);
        var data = ml.Data.LoadFromEnumerable(new[] { new TextRow() });
        var options = new UllmeEmbeddingOptions { Model = folder, BatchSize = 4, Instruction = null };
        var original = ml.Transforms.UllmeEmbed(options).Fit(data);
        string zip = Path.Combine(dir, "model.zip");
        ml.Model.Save(original, data.Schema, zip);
        Directory.Delete(folder, recursive: true);
        return (zip, original, data.Schema);
    }

    private static float[][] Predict(MLContext ml, ITransformer model, IEnumerable<string> texts)
    {
        using var engine = ml.Model.CreatePredictionEngine<TextRow, FeaturesRow>(model);
        return texts.Select(t => engine.Predict(new TextRow { Text = t }).Features).ToArray();
    }

    [Fact]
    public void Saved_zip_is_self_contained_and_loads_to_identical_embeddings()
    {
        string dir = MLNetTestData.NewTempFolder("ullme-saveload-");
        try
        {
            var ml = new MLContext();
            var (zip, original, _) = SaveWithModelFolderDeleted(ml, dir);

            using (var archive = ZipFile.OpenRead(zip))
            {
                var names = archive.Entries.Select(e => e.FullName.Replace('\\', '/')).ToList();
                string prefix = names.Single(n => n.EndsWith("/" + MLNetInterop.ManifestEntry))[..^MLNetInterop.ManifestEntry.Length];
                Assert.Contains(prefix + "Model.key", names);
                Assert.Contains(prefix + "Files/config.json", names);
                Assert.Contains(names, n => n.StartsWith(prefix + "Files/") && n.EndsWith(".safetensors"));
                Assert.Contains(names, n => n.StartsWith(prefix + "Files/") && (n.EndsWith("tokenizer.json") || n.EndsWith("vocab.txt") || n.EndsWith("tokenizer.model")));
            }

            var loaded = ml.Model.Load(zip, out var schema);
            Assert.Equal("Text", schema.Single().Name);
            var texts = MLNetTestData.Texts(6);
            var before = Predict(ml, original, texts);
            var after = Predict(ml, loaded, texts);
            for (int i = 0; i < texts.Count; i++) Assert.Equal(before[i], after[i]);

            // Options and identity survive the round trip.
            var restored = Assert.IsType<UllmeEmbeddingTransformer>(loaded as UllmeEmbeddingTransformer ?? ((TransformerChain<ITransformer>)loaded).Single());
            Assert.Equal(4, restored.Options.BatchSize);
            Assert.Equal("model", restored.ModelId); // the name of the folder it was fitted from, not of the temporary one
            Assert.Equal(MLNetTestData.Dim, restored.EmbeddingDimension);

            // Disposing PredictionEngines (which dispose their transformer) left the loaded model usable; it saves
            // again from its in-memory weights, and that zip loads too.
            string zip2 = Path.Combine(dir, "again.zip");
            ml.Model.Save(loaded, schema, zip2);
            Assert.Equal(before[0], Predict(ml, ml.Model.Load(zip2, out _), texts.Take(1))[0]);
        }
        finally { Directory.Delete(dir, true); }
    }

    [Fact]
    public void Zip_loads_and_embeds_in_a_brand_new_process_without_registration()
    {
        string samples = typeof(UllmeModelSaveLoadTests).Assembly.GetCustomAttributes<AssemblyMetadataAttribute>()
            .Single(a => a.Key == "UllmeSamplesDll").Value!;
        Assert.True(File.Exists(samples), $"samples app not built at {samples}");
        string dir = MLNetTestData.NewTempFolder("ullme-fresh-");
        try
        {
            var ml = new MLContext();
            var (zip, original, _) = SaveWithModelFolderDeleted(ml, dir);
            var texts = MLNetTestData.Texts(5);
            string textsFile = Path.Combine(dir, "texts.txt"), outFile = Path.Combine(dir, "out.bin");
            File.WriteAllLines(textsFile, texts);

            var psi = new ProcessStartInfo("dotnet", ["exec", samples, "embed-zip", zip, textsFile, outFile])
            {
                RedirectStandardOutput = true,
                RedirectStandardError = true,
            };
            using var process = Process.Start(psi)!;
            string stdout = process.StandardOutput.ReadToEnd(), stderr = process.StandardError.ReadToEnd();
            process.WaitForExit();
            Assert.True(process.ExitCode == 0, $"exit {process.ExitCode}\n{stdout}\n{stderr}");

            var bytes = File.ReadAllBytes(outFile);
            Assert.Equal(texts.Count * MLNetTestData.Dim * sizeof(float), bytes.Length);
            var floats = new float[bytes.Length / 4];
            Buffer.BlockCopy(bytes, 0, floats, 0, bytes.Length);
            var expected = MLNetTestData.Reference(texts);
            for (int i = 0; i < texts.Count; i++)
                MLNetTestData.AssertClose(expected[i], floats.AsSpan(i * MLNetTestData.Dim, MLNetTestData.Dim).ToArray(), 1e-5f);
        }
        finally { Directory.Delete(dir, true); }
    }

    /// <summary>Replaces one entry of the zip (found by its name's ending) with new bytes, or deletes it.</summary>
    private static void Rewrite(string zip, string suffix, Func<byte[], byte[]?> change)
    {
        using var archive = ZipFile.Open(zip, ZipArchiveMode.Update);
        var entry = archive.Entries.Single(e => e.FullName.Replace('\\', '/').EndsWith(suffix));
        string name = entry.FullName;
        byte[] content;
        using (var s = entry.Open()) { using var ms = new MemoryStream(); s.CopyTo(ms); content = ms.ToArray(); }
        entry.Delete();
        byte[]? replaced = change(content);
        if (replaced is null) return;
        using var w = archive.CreateEntry(name).Open();
        w.Write(replaced);
    }

    private static UllmeException LoadFails(MLContext ml, string zip)
    {
        var e = Assert.ThrowsAny<Exception>(() => ml.Model.Load(zip, out _));
        // ML.NET invokes component loaders by reflection, so our error arrives wrapped; it is the innermost exception.
        return Assert.IsType<UllmeException>(e.GetBaseException());
    }

    [Fact]
    public void Zip_from_a_future_format_version_fails_with_a_clear_error()
    {
        string dir = MLNetTestData.NewTempFolder("ullme-future-");
        try
        {
            var ml = new MLContext();
            var (zip, _, _) = SaveWithModelFolderDeleted(ml, dir);
            Rewrite(zip, "/" + MLNetInterop.ManifestEntry, b => Encoding.UTF8.GetBytes(
                Encoding.UTF8.GetString(b).Replace($"\"format_version\": {UllmeModelPackage.FormatVersion}", "\"format_version\": 99")));
            var e = LoadFails(ml, zip);
            Assert.Contains("newer Ullme.MLNet", e.Message);
            Assert.Contains("format version 99", e.Message);
        }
        finally { Directory.Delete(dir, true); }
    }

    [Fact]
    public void Corrupted_or_missing_model_file_fails_naming_the_file()
    {
        string dir = MLNetTestData.NewTempFolder("ullme-corrupt-");
        try
        {
            var ml = new MLContext();
            var (zip, _, _) = SaveWithModelFolderDeleted(ml, dir);
            string copy = Path.Combine(dir, "copy.zip");
            File.Copy(zip, copy);

            Rewrite(zip, ".safetensors", b => { b[b.Length / 2] ^= 0x5A; return b; });
            var e = LoadFails(ml, zip);
            Assert.Contains("corrupted", e.Message);
            Assert.Contains(".safetensors", e.Message);

            Rewrite(copy, "Files/config.json", _ => null);
            e = LoadFails(ml, copy);
            Assert.Contains("config.json", e.Message);
            Assert.Contains("missing", e.Message);
        }
        finally { Directory.Delete(dir, true); }
    }

    [Fact]
    public void Truncated_zip_fails_loudly()
    {
        string dir = MLNetTestData.NewTempFolder("ullme-trunc-");
        try
        {
            var ml = new MLContext();
            var (zip, _, _) = SaveWithModelFolderDeleted(ml, dir);
            var bytes = File.ReadAllBytes(zip);
            File.WriteAllBytes(zip, bytes[..(bytes.Length / 2)]);
            var e = Assert.ThrowsAny<Exception>(() => ml.Model.Load(zip, out _));
            Assert.False(string.IsNullOrWhiteSpace(e.GetBaseException().Message));
        }
        finally { Directory.Delete(dir, true); }
    }
}
