using System.Globalization;
using Microsoft.ML;
using Microsoft.ML.Data;
using Ullme.MLNet.Inference;

namespace Ullme.MLNet.Transforms;

/// <summary>One row of a reranked IDataView (see <see cref="UllmeReranking.Rerank"/>).</summary>
public sealed class RerankedRow
{
    /// <summary>The group (query id) as text.</summary>
    public string GroupId { get; set; } = "";
    public string Query { get; set; } = "";
    public string Passage { get; set; } = "";
    /// <summary>The score the candidates were ordered by (see <see cref="RerankOptions"/>).</summary>
    public float Score { get; set; }
    /// <summary>1 = best in its group.</summary>
    public int Rank { get; set; }
    /// <summary>Cosine score; NaN when the ranking did not need it.</summary>
    public float RepresentationScore { get; set; }
    /// <summary>Generation score; NaN when the ranking did not need it.</summary>
    public float GenerationScore { get; set; }
    /// <summary>Position of the row among its group's rows in the input.</summary>
    public int CandidateIndex { get; set; }
}

/// <summary>
/// Reranking over an ML.NET <see cref="IDataView"/> with one row per (query, candidate), grouped by a query-id column:
/// the candidates of each group are scored together (so <see cref="RerankBy.Mix"/> standardises within the group) and
/// returned best first. Groups appear in the order of their first row; a group's rows need not be contiguous.
/// </summary>
public static class UllmeReranking
{
    /// <summary>Reranks every group of <paramref name="data"/>; returns rows of <see cref="RerankedRow"/>.</summary>
    /// <exception cref="UllmeException">A column is missing or of the wrong type, or a group mixes query texts.</exception>
    public static IDataView Rerank(this Reranker reranker, MLContext mlContext, IDataView data,
        string groupColumnName = "QueryId", string queryColumnName = "Query", string passageColumnName = "Passage")
    {
        ArgumentNullException.ThrowIfNull(reranker);
        ArgumentNullException.ThrowIfNull(mlContext);
        ArgumentNullException.ThrowIfNull(data);
        return mlContext.Data.LoadFromEnumerable(RerankRows(reranker, data, groupColumnName, queryColumnName, passageColumnName));
    }

    /// <summary>The rows <see cref="Rerank"/> puts in its view.</summary>
    public static List<RerankedRow> RerankRows(Reranker reranker, IDataView data,
        string groupColumnName = "QueryId", string queryColumnName = "Query", string passageColumnName = "Passage")
    {
        const string what = "Rerank";
        SchemaChecks.CheckInput(data.Schema, queryColumnName, what);
        SchemaChecks.CheckInput(data.Schema, passageColumnName, what);
        DataViewSchema.Column groupColumn = data.Schema.GetColumnOrNull(groupColumnName)
            ?? throw new UllmeException($"{what}: group column '{groupColumnName}' not found; the data has columns {string.Join(", ", data.Schema.Select(c => "'" + c.Name + "'"))}.");

        var order = new List<string>();
        var groups = new Dictionary<string, (string Query, List<string> Passages)>(StringComparer.Ordinal);
        var q = data.Schema[queryColumnName];
        var p = data.Schema[passageColumnName];
        using (var cursor = data.GetRowCursor([groupColumn, q, p]))
        {
            var groupGetter = GroupGetter(cursor, groupColumn);
            var queryGetter = cursor.GetGetter<ReadOnlyMemory<char>>(q);
            var passageGetter = cursor.GetGetter<ReadOnlyMemory<char>>(p);
            ReadOnlyMemory<char> query = default, passage = default;
            while (cursor.MoveNext())
            {
                string id = groupGetter();
                queryGetter(ref query);
                passageGetter(ref passage);
                string qs = query.ToString();
                if (!groups.TryGetValue(id, out var g))
                {
                    groups[id] = g = (qs, []);
                    order.Add(id);
                }
                else if (!string.Equals(g.Query, qs, StringComparison.Ordinal))
                    throw new UllmeException($"{what}: group '{id}' (column '{groupColumnName}') has two different queries in column '{queryColumnName}': \"{g.Query}\" and \"{qs}\" (row {cursor.Position}).");
                g.Passages.Add(passage.ToString());
            }
        }

        var ranked = reranker.Rerank(order.Select(id => new RerankQuery(groups[id].Query, groups[id].Passages)).ToArray());
        var rows = new List<RerankedRow>();
        for (int i = 0; i < order.Count; i++)
            foreach (var c in ranked[i])
                rows.Add(new RerankedRow
                {
                    GroupId = order[i],
                    Query = groups[order[i]].Query,
                    Passage = c.Text,
                    Score = (float)c.Score,
                    Rank = c.Rank,
                    RepresentationScore = (float)(c.Representation ?? double.NaN),
                    GenerationScore = (float)(c.Generation ?? double.NaN),
                    CandidateIndex = c.Index,
                });
        return rows;
    }

    /// <summary>The group id of the current row as text: text and numeric columns (keys included) are accepted.</summary>
    private static Func<string> GroupGetter(DataViewRowCursor cursor, DataViewSchema.Column column)
    {
        var type = column.Type;
        if (type is TextDataViewType) return Make<ReadOnlyMemory<char>>(v => v.ToString());
        if (type.RawType == typeof(int)) return Make<int>(v => v.ToString(CultureInfo.InvariantCulture));
        if (type.RawType == typeof(long)) return Make<long>(v => v.ToString(CultureInfo.InvariantCulture));
        if (type.RawType == typeof(uint)) return Make<uint>(v => v.ToString(CultureInfo.InvariantCulture));
        if (type.RawType == typeof(ulong)) return Make<ulong>(v => v.ToString(CultureInfo.InvariantCulture));
        if (type.RawType == typeof(float)) return Make<float>(v => v.ToString("R", CultureInfo.InvariantCulture));
        if (type.RawType == typeof(double)) return Make<double>(v => v.ToString("R", CultureInfo.InvariantCulture));
        throw new UllmeException($"Rerank: group column '{column.Name}' must be text or a number, found {type}.");

        Func<string> Make<T>(Func<T, string> format)
        {
            var getter = cursor.GetGetter<T>(column);
            T value = default!;
            return () => { getter(ref value); return format(value); };
        }
    }
}
