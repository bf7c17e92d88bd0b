using Microsoft.ML;
using Microsoft.ML.Data;
using Ullme.MLNet.Inference;

namespace Ullme.MLNet.Tests.MLNetIntegration;

/// <summary>The default model, loaded once per test run, and small deterministic texts.</summary>
internal static class MLNetTestData
{
    private static readonly Lazy<UllmeModel> DefaultModel = new(() => UllmeModel.Load(UllmeModel.DefaultModelName));
    private static readonly Lazy<string> DefaultFolder = new(() =>
    {
        string folder = Path.Combine(Path.GetTempPath(), "ullme-mlnet-tests-default-" + Environment.ProcessId);
        if (!File.Exists(Path.Combine(folder, "config.json"))) Default.SaveFolder(folder);
        return folder;
    });

    /// <summary>all-MiniLM-L6-v2, shared by the tests (the engine is thread-safe).</summary>
    public static UllmeModel Default => DefaultModel.Value;

    /// <summary>D of the default model (384).</summary>
    public static int Dim => Default.EmbeddingDimension;

    /// <summary>A self-contained folder copy of the default model (for path-based options and save/load).</summary>
    public static string DefaultModelFolder => DefaultFolder.Value;

    /// <summary>Embeddings straight from the engine: what every ML.NET / M.E.AI surface must reproduce.</summary>
    public static float[][] Reference(IReadOnlyList<string> texts, EmbeddingOptions? options = null) =>
        new EmbeddingEngine(Default).Embed(texts, options);

    private static readonly string[] Subjects = ["my card", "the transfer", "a cash withdrawal", "my PIN", "the exchange rate", "my account"];
    private static readonly string[] Tails =
    [
        "",
        " is not working",
        " was declined at the shop yesterday evening",
        " shows a fee I do not recognise and I would like to know why it was charged twice this month",
        " has been pending for three days, although the app said it would arrive within one business day",
    ];

    /// <summary>Text i: deterministic, with lengths varying from a few to ~30 tokens so that batches need padding.</summary>
    public static string Text(long i) => $"Question {i}: {Subjects[i % Subjects.Length]}{Tails[(i * 7 + i / 5) % Tails.Length]}.";

    public static List<string> Texts(int n) => Enumerable.Range(0, n).Select(i => Text(i)).ToList();

    /// <summary>Two clearly different intents, for trainers.</summary>
    public static List<LabeledText> TwoIntents(int perClass)
    {
        string[] card = ["My card was declined", "The card payment did not go through", "Why was my card rejected at the store", "My card is not accepted", "Payment with my card failed"];
        string[] rate = ["What is the exchange rate for euros", "How are currency conversion rates calculated", "Which exchange rate do you use", "The rate for dollars seems wrong", "Where can I see today's exchange rates"];
        var rows = new List<LabeledText>();
        for (int i = 0; i < perClass; i++)
        {
            rows.Add(new LabeledText { Text = card[i % card.Length] + (i >= card.Length ? $" again ({i})" : ""), Label = "card" });
            rows.Add(new LabeledText { Text = rate[i % rate.Length] + (i >= rate.Length ? $" today ({i})" : ""), Label = "rate" });
        }
        return rows;
    }

    public static void AssertClose(float[] expected, float[] actual, float tolerance = 1e-4f)
    {
        Assert.Equal(expected.Length, actual.Length);
        float worst = 0;
        for (int i = 0; i < expected.Length; i++) worst = Math.Max(worst, Math.Abs(expected[i] - actual[i]));
        Assert.True(worst <= tolerance, $"max |difference| {worst} > {tolerance}");
    }

    public static string NewTempFolder(string prefix) => Directory.CreateTempSubdirectory(prefix).FullName;
}

public sealed class TextRow
{
    public string Text { get; set; } = "";
}

public sealed class LabeledText
{
    public string Text { get; set; } = "";
    public string Label { get; set; } = "";
}

public sealed class FeaturesRow
{
    public float[] Features { get; set; } = [];
}

/// <summary>
/// A lazily generated view of <c>n</c> rows (Id: int, Text: string, Pair: Vector&lt;Single, 2&gt;) that counts what is
/// read from it: rows moved over, text values fetched, cursors still open. Nothing is ever stored.
/// </summary>
internal sealed class CountingTextView : IDataView
{
    private readonly long _rows;
    private readonly bool _schemaOnly;
    private long _rowsRead, _textReads, _openCursors;

    public CountingTextView(long rows, bool schemaOnly = false)
    {
        _rows = rows;
        _schemaOnly = schemaOnly;
        var b = new DataViewSchema.Builder();
        b.AddColumn("Id", NumberDataViewType.Int32);
        b.AddColumn("Text", TextDataViewType.Instance);
        b.AddColumn("Pair", new VectorDataViewType(NumberDataViewType.Single, 2));
        Schema = b.ToSchema();
    }

    public long RowsRead => Interlocked.Read(ref _rowsRead);
    public long TextReads => Interlocked.Read(ref _textReads);
    public long OpenCursors => Interlocked.Read(ref _openCursors);

    public DataViewSchema Schema { get; }
    public bool CanShuffle => false;
    public long? GetRowCount() => _rows;

    public DataViewRowCursor GetRowCursor(IEnumerable<DataViewSchema.Column> columnsNeeded, Random? rand = null)
    {
        if (_schemaOnly) throw new InvalidOperationException("schema-only view: no rows may be read");
        Interlocked.Increment(ref _openCursors);
        return new Cursor(this, columnsNeeded.Select(c => c.Index).ToHashSet());
    }

    public DataViewRowCursor[] GetRowCursorSet(IEnumerable<DataViewSchema.Column> columnsNeeded, int n, Random? rand = null) =>
        [GetRowCursor(columnsNeeded, rand)];

    private sealed class Cursor(CountingTextView view, HashSet<int> active) : DataViewRowCursor
    {
        private long _position = -1;
        private bool _disposed;

        public override DataViewSchema Schema => view.Schema;
        public override long Position => _position;
        public override long Batch => 0;
        public override bool IsColumnActive(DataViewSchema.Column column) => active.Contains(column.Index);

        public override bool MoveNext()
        {
            if (_position + 1 >= view._rows) return false;
            _position++;
            Interlocked.Increment(ref view._rowsRead);
            return true;
        }

        public override ValueGetter<DataViewRowId> GetIdGetter() => (ref DataViewRowId id) => id = new DataViewRowId((ulong)_position, 0);

        public override ValueGetter<TValue> GetGetter<TValue>(DataViewSchema.Column column)
        {
            if (!active.Contains(column.Index)) throw new InvalidOperationException($"column {column.Name} not active");
            Delegate g = column.Name switch
            {
                "Id" => (ValueGetter<int>)((ref int v) => v = (int)_position),
                "Text" => (ValueGetter<ReadOnlyMemory<char>>)((ref ReadOnlyMemory<char> v) =>
                {
                    Interlocked.Increment(ref view._textReads);
                    v = MLNetTestData.Text(_position).AsMemory();
                }),
                "Pair" => (ValueGetter<VBuffer<float>>)((ref VBuffer<float> v) =>
                {
                    // Reuses the caller's buffer, like real cursors do: consumers must copy.
                    var editor = VBufferEditor.Create(ref v, 2);
                    editor.Values[0] = _position;
                    editor.Values[1] = -_position;
                    v = editor.Commit();
                }),
                _ => throw new InvalidOperationException(column.Name),
            };
            return (ValueGetter<TValue>)g;
        }

        protected override void Dispose(bool disposing)
        {
            if (disposing && !_disposed)
            {
                _disposed = true;
                Interlocked.Decrement(ref view._openCursors);
            }
            base.Dispose(disposing);
        }
    }
}
