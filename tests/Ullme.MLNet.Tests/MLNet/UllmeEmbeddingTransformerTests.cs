using Microsoft.ML;
using Microsoft.ML.Data;
using Ullme.MLNet.Transforms;
using Ullme.MLNet.Tests.Infrastructure;

namespace Ullme.MLNet.Tests.MLNetIntegration;

/// <summary>The transform as an IDataView operator: schema, laziness, read-ahead batching, order, pass-through columns,
/// column pruning, ML.NET data operations, PredictionEngine, threads, MLContext settings and logging.</summary>
[Collection(TorchCollection.Name)]
public sealed class UllmeEmbeddingTransformerTests
{
    private static UllmeEmbeddingTransformer Fit(MLContext ml, IDataView data, int batchSize = 2, int readAhead = 5) =>
        ml.Transforms.UllmeEmbed(MLNetTestData.Default, options: new UllmeEmbeddingOptions { BatchSize = batchSize, ReadAheadRows = readAhead }).Fit(data);

    [Fact]
    public void Rows_come_out_in_input_order_with_their_own_embedding_and_columns_passed_through()
    {
        var ml = new MLContext();
        var source = new CountingTextView(23); // 23 rows, windows of 5: the last window is partial
        var transformer = Fit(ml, source);
        var output = transformer.Transform(source);
        var reference = MLNetTestData.Reference(MLNetTestData.Texts(23));

        using (var cursor = output.GetRowCursor(output.Schema))
        {
            var id = cursor.GetGetter<int>(output.Schema["Id"]);
            var text = cursor.GetGetter<ReadOnlyMemory<char>>(output.Schema["Text"]);
            var pair = cursor.GetGetter<VBuffer<float>>(output.Schema["Pair"]);
            var features = cursor.GetGetter<VBuffer<float>>(output.Schema["Features"]);
            var rowId = cursor.GetIdGetter();
            int n = 0, i = 0;
            ReadOnlyMemory<char> t = default;
            VBuffer<float> p = default, f = default;
            DataViewRowId rid = default;
            while (cursor.MoveNext())
            {
                Assert.Equal(n, cursor.Position);
                id(ref i); text(ref t); pair(ref p); features(ref f); rowId(ref rid);
                Assert.Equal(n, i);
                Assert.Equal((ulong)n, rid.Low);
                Assert.Equal(MLNetTestData.Text(n), t.ToString());
                Assert.Equal([n, -n], p.DenseValues().ToArray());
                MLNetTestData.AssertClose(reference[n], f.DenseValues().ToArray());
                n++;
            }
            Assert.Equal(23, n);
        }
        Assert.Equal(23, transformer.RowsEmbedded);
        Assert.Equal(5, transformer.EngineCalls); // ceil(23 / 5) windows
        Assert.Equal(0, source.OpenCursors);
    }

    [Fact]
    public void Output_is_a_known_size_single_vector_and_hides_a_same_named_input_column()
    {
        var ml = new MLContext();
        var source = new CountingTextView(1);
        var transformer = ml.Transforms.UllmeEmbed(MLNetTestData.Default, outputColumnName: "Pair").Fit(source);
        var schema = transformer.GetOutputSchema(source.Schema);
        var type = Assert.IsType<VectorDataViewType>(schema["Pair"].Type);
        Assert.Equal(NumberDataViewType.Single, type.ItemType);
        Assert.Equal(MLNetTestData.Dim, type.Size);
        Assert.Equal(MLNetTestData.Dim, transformer.EmbeddingDimension);
        Assert.True(schema[2].IsHidden); // the input's Pair column
    }

    [Fact]
    public void A_million_row_view_is_streamed_not_materialised()
    {
        var ml = new MLContext();
        var source = new CountingTextView(1_000_000);
        var transformer = Fit(ml, source, batchSize: 4, readAhead: 8);
        var output = transformer.Transform(source);
        Assert.Equal(1_000_000, output.GetRowCount());
        Assert.Equal(0, source.RowsRead); // Transform is lazy

        using (var cursor = output.GetRowCursor([output.Schema["Features"]]))
        {
            var getter = cursor.GetGetter<VBuffer<float>>(output.Schema["Features"]);
            VBuffer<float> v = default;
            for (int k = 0; k < 10; k++)
            {
                Assert.True(cursor.MoveNext());
                getter(ref v);
            }
        }
        // 10 rows served = two read-ahead windows of 8: nothing beyond them was read or embedded.
        Assert.Equal(16, source.RowsRead);
        Assert.Equal(16, transformer.RowsEmbedded);
        Assert.Equal(0, source.OpenCursors); // disposing our cursor disposed the input cursor
    }

    [Fact]
    public void Embedding_is_not_computed_when_the_output_column_is_not_requested()
    {
        var ml = new MLContext();
        var source = new CountingTextView(1_000);
        var transformer = Fit(ml, source);
        var output = transformer.Transform(source);

        using (var cursor = output.GetRowCursor([output.Schema["Id"]]))
        {
            var id = cursor.GetGetter<int>(output.Schema["Id"]);
            int i = 0, rows = 0;
            while (cursor.MoveNext()) { id(ref i); rows++; }
            Assert.Equal(1_000, rows);
            Assert.False(cursor.IsColumnActive(output.Schema["Features"]));
        }
        // Through ML.NET's own API too: a row class without Features does not ask for it.
        var ids = ml.Data.CreateEnumerable<IdRow>(output, reuseRowObject: false).Take(50).Select(r => r.Id).ToList();
        Assert.Equal(Enumerable.Range(0, 50), ids);

        Assert.Equal(0, transformer.RowsEmbedded);
        Assert.Equal(0, source.TextReads); // the text column was not even read
    }

    private sealed class IdRow { public int Id { get; set; } }

    [Fact]
    public void Fit_works_on_a_schema_only_view_and_reads_no_rows()
    {
        var ml = new MLContext();
        var schemaOnly = new CountingTextView(0, schemaOnly: true); // any cursor request throws
        var transformer = ml.Transforms.UllmeEmbed(MLNetTestData.Default).Fit(schemaOnly);
        var output = transformer.Transform(schemaOnly);
        Assert.Equal(MLNetTestData.Dim, ((VectorDataViewType)output.Schema["Features"].Type).Size);
    }

    [Fact]
    public void Preview_shows_embedded_rows()
    {
        var ml = new MLContext();
        var data = ml.Data.LoadFromEnumerable(MLNetTestData.Texts(5).Select(t => new TextRow { Text = t }));
        var preview = ml.Transforms.UllmeEmbed(MLNetTestData.Default).Fit(data).Transform(data).Preview(maxRows: 3);
        Assert.Equal(3, preview.RowView.Length);
        var reference = MLNetTestData.Reference(MLNetTestData.Texts(3));
        for (int r = 0; r < 3; r++)
        {
            var features = (VBuffer<float>)preview.RowView[r].Values.Single(kv => kv.Key == "Features").Value;
            MLNetTestData.AssertClose(reference[r], features.DenseValues().ToArray());
        }
    }

    [Fact]
    public void Cache_checkpoint_embeds_each_row_once_when_several_steps_read_the_embeddings()
    {
        // NormalizeMinMax reads Features to fit, then the trainer reads them again: without a cache each of those
        // passes embeds the data (the trainer's own automatic cache only covers its later passes).
        var ml = new MLContext(seed: 1);
        var data = ml.Data.LoadFromEnumerable(MLNetTestData.TwoIntents(10));
        var rest = ml.Transforms.NormalizeMinMax("Features")
            .Append(ml.Transforms.Conversion.MapValueToKey("Label"))
            .Append(ml.MulticlassClassification.Trainers.LbfgsMaximumEntropy(l1Regularization: 0, l2Regularization: 0.01f));

        var cached = ml.Transforms.UllmeEmbed(MLNetTestData.Default).AppendCacheCheckpoint(ml).Append(rest).Fit(data);
        Assert.Equal(20, ((UllmeEmbeddingTransformer)cached.First()).RowsEmbedded);

        var uncached = ml.Transforms.UllmeEmbed(MLNetTestData.Default).Append(rest).Fit(data);
        Assert.Equal(40, ((UllmeEmbeddingTransformer)uncached.First()).RowsEmbedded);
    }

    [Fact]
    public void Works_with_TrainTestSplit_and_CrossValidate_reproducibly_for_a_seed()
    {
        static (double cv, double split) Run()
        {
            var ml = new MLContext(seed: 7);
            var data = ml.Data.LoadFromEnumerable(MLNetTestData.TwoIntents(12));
            var pipeline = ml.Transforms.UllmeEmbed(MLNetTestData.Default)
                .AppendCacheCheckpoint(ml)
                .Append(ml.Transforms.Conversion.MapValueToKey("Label"))
                .Append(ml.MulticlassClassification.Trainers.LbfgsMaximumEntropy(l1Regularization: 0, l2Regularization: 0.01f));
            var folds = ml.MulticlassClassification.CrossValidate(data, pipeline, numberOfFolds: 2);
            var split = ml.Data.TrainTestSplit(data, testFraction: 0.25);
            var metrics = ml.MulticlassClassification.Evaluate(pipeline.Fit(split.TrainSet).Transform(split.TestSet));
            return (folds.Average(f => f.Metrics.MicroAccuracy), metrics.MicroAccuracy);
        }

        var first = Run();
        Assert.True(first.cv >= 0.9, $"cross-validated accuracy {first.cv}");
        Assert.True(first.split >= 0.8, $"held-out accuracy {first.split}");
        Assert.Equal(first, Run()); // same seed, same folds, same embeddings: same numbers
    }

    [Fact]
    public void PredictionEngine_gives_the_engine_embedding_and_engines_share_the_transformer_across_threads()
    {
        var ml = new MLContext();
        var texts = MLNetTestData.Texts(12);
        var data = ml.Data.LoadFromEnumerable(new[] { new TextRow() });
        var transformer = ml.Transforms.UllmeEmbed(MLNetTestData.Default).Fit(data);

        float[][] sequential;
        using (var engine = ml.Model.CreatePredictionEngine<TextRow, FeaturesRow>(transformer))
            sequential = texts.Select(t => engine.Predict(new TextRow { Text = t }).Features).ToArray();
        var reference = MLNetTestData.Reference(texts);
        for (int i = 0; i < texts.Count; i++) MLNetTestData.AssertClose(reference[i], sequential[i]);

        var results = new float[4][][];
        Parallel.For(0, 4, new ParallelOptions { MaxDegreeOfParallelism = 4 }, w =>
        {
            using var engine = ml.Model.CreatePredictionEngine<TextRow, FeaturesRow>(transformer);
            results[w] = texts.Select(t => engine.Predict(new TextRow { Text = t }).Features).ToArray();
        });
        foreach (var r in results)
            for (int i = 0; i < texts.Count; i++) Assert.Equal(sequential[i], r[i]);
    }

    [Fact]
    public void Concurrent_cursors_over_one_transformer_agree()
    {
        var ml = new MLContext();
        var source = new CountingTextView(30);
        var output = Fit(ml, source, batchSize: 3, readAhead: 7).Transform(source);
        var runs = new float[3][][];
        Parallel.For(0, 3, k => runs[k] = ml.Data.CreateEnumerable<FeaturesRow>(output, reuseRowObject: false).Select(r => r.Features).ToArray());
        for (int k = 1; k < 3; k++)
            for (int i = 0; i < 30; i++) MLNetTestData.AssertClose(runs[0][i], runs[k][i], 1e-5f);
    }

    [Fact]
    public void Messages_reach_MLContext_Log_and_gpu_request_falls_back_to_cpu_when_allowed()
    {
        if (TorchSharp.torch.cuda.is_available()) return; // the fallback path only exists without CUDA
        var ml = new MLContext { GpuDeviceId = 0, FallbackToCpu = true };
        var messages = new List<string>();
        ml.Log += (_, e) => { lock (messages) messages.Add(e.Message); };
        var data = ml.Data.LoadFromEnumerable(MLNetTestData.Texts(3).Select(t => new TextRow { Text = t }));
        var rows = ml.Transforms.UllmeEmbed(model: MLNetTestData.DefaultModelFolder).Fit(data).Transform(data);
        Assert.Equal(3, ml.Data.CreateEnumerable<FeaturesRow>(rows, reuseRowObject: false).Count());

        Assert.Contains(messages, m => m.Contains("GpuDeviceId = 0") && m.Contains("CPU"));
        Assert.Contains(messages, m => m.Contains("UllmeEmbed: loaded model") && m.Contains("cpu"));
        Assert.Contains(messages, m => m.Contains("UllmeEmbed: embedded rows 0..2"));
    }

    [Fact]
    public void Gpu_request_without_fallback_fails_naming_the_setting()
    {
        if (TorchSharp.torch.cuda.is_available()) return;
        var ml = new MLContext { GpuDeviceId = 0, FallbackToCpu = false };
        var data = ml.Data.LoadFromEnumerable(new[] { new TextRow() });
        var e = Assert.Throws<UllmeException>(() => { ml.Transforms.UllmeEmbed(model: MLNetTestData.DefaultModelFolder).Fit(data); });
        Assert.Contains("GpuDeviceId", e.Message);
    }

    [Fact]
    public void CancelExecution_stops_embedding_before_the_next_window()
    {
        // MLContext.CancelExecution is internal to ML.NET (AutoML calls it to stop a trial on timeout); reach it the
        // way AutoML does, through the context.
        var cancel = typeof(MLContext).GetMethod("CancelExecution", System.Reflection.BindingFlags.Instance | System.Reflection.BindingFlags.NonPublic)!;
        var ml = new MLContext();
        var source = new CountingTextView(100);
        var transformer = Fit(ml, source, batchSize: 2, readAhead: 4);
        var output = transformer.Transform(source);
        using var cursor = output.GetRowCursor([output.Schema["Features"]]);
        Assert.True(cursor.MoveNext());
        cancel.Invoke(ml, null);
        for (int k = 0; k < 3; k++) Assert.True(cursor.MoveNext()); // rest of the current window
        Assert.ThrowsAny<OperationCanceledException>(() => cursor.MoveNext());
        Assert.Equal(4, transformer.RowsEmbedded);
    }
}
