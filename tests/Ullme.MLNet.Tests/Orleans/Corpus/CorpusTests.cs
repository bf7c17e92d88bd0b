using System.Security.Cryptography;
using System.Text;
using Parquet;
using Parquet.Schema;
using Ullme.Cli.Io;
using Ullme.MLNet.Evaluation.Datasets;
using Ullme.MLNet.Orleans.Corpus;
using Ullme.MLNet.Orleans.Jobs;

namespace Ullme.MLNet.Tests.Orleans.Corpus;

/// <summary>
/// The corpus layer of the cluster: planning a file into work items and reading each item from its byte offset gives
/// exactly the rows <c>ullme embed</c> reads (InputReader; DataFiles for CSV/TSV), in order, for every shard size;
/// ids, id columns and errors as specified; Parquet inputs across row groups; shard files round-trip bit for bit;
/// globs expand as documented.
/// </summary>
public sealed class CorpusTests : IDisposable
{
    private static readonly int[] ShardSizes = [1, 2, 3, 7, 1000];
    private readonly string _dir = Directory.CreateTempSubdirectory("ullme-corpus-").FullName;

    public void Dispose()
    {
        try { Directory.Delete(_dir, recursive: true); } catch (IOException) { }
    }

    private string Write(string name, byte[] bytes)
    {
        string path = Path.Combine(_dir, name);
        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        File.WriteAllBytes(path, bytes);
        return path;
    }

    /// <summary>UTF-8 of <paramref name="text"/> with "\xNN" escapes replaced by raw bytes (invalid UTF-8 on purpose).</summary>
    private static byte[] Bytes(string text, bool bom = false)
    {
        var result = new List<byte>();
        if (bom) result.AddRange([0xEF, 0xBB, 0xBF]);
        var parts = text.Split("\\x");
        result.AddRange(Encoding.UTF8.GetBytes(parts[0]));
        foreach (string p in parts.Skip(1))
        {
            result.Add(Convert.ToByte(p[..2], 16));
            result.AddRange(Encoding.UTF8.GetBytes(p[2..]));
        }
        return [.. result];
    }

    private static List<CorpusRow> ReadPlan(List<WorkItem> items, string textColumn = "text", string? idColumn = null) =>
        items.SelectMany(item => CorpusReader.Read(item, textColumn, idColumn)).ToList();

    private static void AssertItemsTile(List<WorkItem> items, int shardRows, long total)
    {
        Assert.Equal(Enumerable.Range(0, items.Count), items.Select(i => i.Index));
        long next = 0;
        foreach (var item in items)
        {
            Assert.Equal(next, item.StartRow);
            Assert.InRange(item.Rows, 1, shardRows);
            next += item.Rows;
        }
        Assert.Equal(total, next);
        Assert.All(items.SkipLast(1), i => Assert.Equal(shardRows, i.Rows));
    }

    /// <summary>Plans <paramref name="path"/> with each shard size and checks the rows read item by item against
    /// <paramref name="expected"/> (texts) and the default ids; also <see cref="CorpusReader.ReadAll"/>.</summary>
    private static void AssertPlansRead(string path, string[] expected, string textColumn = "text")
    {
        Assert.NotEmpty(expected);
        string name = Path.GetFileName(path);
        var ids = Enumerable.Range(1, expected.Length).Select(i => $"{name}:{i}").ToArray();
        foreach (int shardRows in ShardSizes)
        {
            var items = CorpusPlanner.Plan([path], textColumn, null, shardRows, CancellationToken.None);
            AssertItemsTile(items, shardRows, expected.Length);
            Assert.All(items, i => Assert.Equal(name, i.IdPrefix));
            var rows = ReadPlan(items, textColumn);
            Assert.Equal(expected, rows.Select(r => r.Text).ToArray());
            Assert.Equal(ids, rows.Select(r => r.Id).ToArray());
        }
        var all = CorpusReader.ReadAll(path, textColumn, null, name).ToList();
        Assert.Equal(expected, all.Select(r => r.Text).ToArray());
        Assert.Equal(ids, all.Select(r => r.Id).ToArray());
    }

    private static string[] Embed(string path, string column = "text") =>
        InputReader.Enumerate(path, column).Select(r => r.Text!).ToArray();

    [Fact]
    public void Txt_rows_match_ullme_embed_for_every_shard_size()
    {
        var files = new[]
        {
            Write("a.txt", Bytes("first\r\n\r\nsecond \\xE2\\x82\nüñí €\n\n  \n\ta\rb\r\r\nlast without newline", bom: true)),
            Write("b.txt", Bytes("one\n\ntwo\n\n")),                       // trailing newline adds no row, an empty line before it does
            Write("c.txt", Bytes("x\\xFF\\xFEy\n\\xC3\n\\xE2\\x82\r\nz\n\r")),    // invalid UTF-8; a final "\r" is a row
            Write("d.txt", Bytes("\n\n\n")),
        };
        foreach (string f in files)
        {
            var expected = Embed(f);
            AssertPlansRead(f, expected);
        }
        Assert.Equal(["first", "", "second \uFFFD", "üñí €", "", "  ", "\ta\rb\r", "last without newline"], Embed(files[0]));
        Assert.Equal(["one", "", "two", ""], Embed(files[1]));
        Assert.Equal(3, Embed(files[3]).Length);
    }

    [Fact]
    public void Txt_items_record_byte_offsets_and_lines_of_their_first_row()
    {
        string path = Write("lines.txt", Bytes("ab\r\n\ncd\néé\n", bom: true));
        var items = CorpusPlanner.Plan([path], "text", null, 1, CancellationToken.None);
        Assert.Equal([3L, 7, 8, 11], items.Select(i => i.ByteOffset));
        Assert.Equal([1L, 2, 3, 4], items.Select(i => i.StartLine));
        Assert.Equal("éé", Assert.Single(CorpusReader.Read(items[3], "text", null)).Text);
    }

    [Fact]
    public void Jsonl_rows_match_ullme_embed_for_every_shard_size()
    {
        string path = Write("data.jsonl", Bytes(
            "{\"text\": \"alpha\"}\r\n" +
            "\r\n" +
            "   \t \n" +
            "\u00A0\u3000\n" +                                    // Unicode white space only: blank, not a row
            "{\"text\": \"line\\nbreak \\\"q\\\" é\", \"n\": 1}\n" +
            "\n" +
            "{\"text\": \"bad \\xE2\\x82 bytes\"}\n" +
            "  {\"text\": \"\"}  \n" +
            "{\"other\": 1, \"text\": \"日本語\"}\n" +
            "{\"text\": \"no newline at end\"}" +
            "\n \t", bom: true));
        var expected = Embed(path);
        Assert.Equal(6, expected.Length);
        Assert.Equal("bad \uFFFD bytes", expected[2]);
        AssertPlansRead(path, expected);
    }

    [Fact]
    public void Csv_rows_match_ullme_embed_and_DataFiles_for_every_shard_size()
    {
        string path = Write("data.csv", Bytes(
            " Text ,id,extra\r\n" +
            "plain,1,x\r\n" +
            "\r\n" +
            "\"quoted, with comma\",2,y\n" +
            "\"multi\nline\r\nfield\",3,z\n" +
            "\n" +
            "\"say \"\"hi\"\"\",4,\n" +
            "\"\",5,empty quoted\n" +
            "  ,6,spaces\n" +
            "a\rb,7,cr dropped\n" +
            "\\xE2\r\\x82\\xAC,8,split bytes\n" +
            "\r\n" +
            "\"\"\"\",9,quote only\n" +
            "ünï,10,\"tail \"\"q\"\" \n, line\"\n" +
            "\"\n\",11,newline only\n" +
            "\"\"\"\n\"\"\",13,quotes and newline\n\n" +
            "last,12,no newline", bom: true));
        var expected = Embed(path, "text");
        var dataFiles = DataFiles.ReadCsv(path).Skip(1).Select(r => r.Fields[0]).ToArray();
        Assert.Equal(dataFiles, expected);
        Assert.Equal(13, expected.Length);
        Assert.Contains("\"\n\"", expected);
        Assert.Contains("multi\nline\r\nfield", expected);
        Assert.Contains("say \"hi\"", expected);
        AssertPlansRead(path, expected);
        AssertPlansRead(path, expected, "TEXT");
    }

    [Fact]
    public void Tsv_rows_match_ullme_embed_and_DataFiles_for_every_shard_size()
    {
        string path = Write("data.tsv", Bytes(
            "text\tid\r\n" +
            "plain\t1\r\n" +
            "\r\n" +
            "\"quotes stay\"\t2\n" +
            "lone cr\t3\rnext line\t4\n" +
            "\n" +
            "\t5\n" +
            "ü \\xFF\t6\r\r\n" +
            "  spaced  \t7\n" +
            "last\t8", bom: true));
        var expected = Embed(path);
        var dataFiles = DataFiles.ReadTsv(path).Skip(1).Select(r => r.Fields[0]).ToArray();
        Assert.Equal(dataFiles, expected);
        Assert.Equal(["plain", "\"quotes stay\"", "lone cr", "next line", "", "ü \uFFFD", "  spaced  ", "last"], expected);
        AssertPlansRead(path, expected);
        var lines = CorpusPlanner.Plan([path], "text", null, 1, CancellationToken.None).Select(i => i.StartLine);
        Assert.Equal(DataFiles.ReadTsv(path).Skip(1).Select(r => (long)r.Line), lines);
    }

    [Fact]
    public void Csv_items_start_at_the_line_where_their_record_starts()
    {
        string path = Write("lines.csv", Bytes("text\n\"a\nb\"\n\nc\n\"d\r\n\r\ne\"\nf\n"));
        var items = CorpusPlanner.Plan([path], "text", null, 1, CancellationToken.None);
        Assert.Equal(DataFiles.ReadCsv(path).Skip(1).Select(r => (long)r.Line), items.Select(i => i.StartLine));
        Assert.Equal([2L, 5, 6, 9], items.Select(i => i.StartLine));
    }

    [Fact]
    public void Id_columns_give_the_ids_of_jsonl_csv_and_tsv_rows()
    {
        string jsonl = Write("ids.jsonl", Bytes("{\"id\": \"a\", \"text\": \"x\"}\n\n{\"id\": 7, \"text\": \"y\"}\n{\"text\": \"z\", \"id\": 1.50}\n"));
        string csv = Write("ids.csv", Bytes("key,body\nk1,\"x\"\n\"k,2\",y\n\nk3,z\n"));
        string tsv = Write("ids.tsv", Bytes("key\tbody\nk1\tx\nk2\ty\nk3\tz\n"));
        foreach (int shardRows in ShardSizes)
        {
            var j = ReadPlan(CorpusPlanner.Plan([jsonl], "text", "id", shardRows, CancellationToken.None), "text", "id");
            Assert.Equal([new("a", "x"), new("7", "y"), new("1.50", "z")], j);
            var c = ReadPlan(CorpusPlanner.Plan([csv], "body", "key", shardRows, CancellationToken.None), "body", "key");
            Assert.Equal([new("k1", "x"), new("k,2", "y"), new("k3", "z")], c);
            var t = ReadPlan(CorpusPlanner.Plan([tsv], "body", "KEY", shardRows, CancellationToken.None), "body", "KEY");
            Assert.Equal([new("k1", "x"), new("k2", "y"), new("k3", "z")], t);
        }
        // a JSONL text field other than "text"
        string custom = Write("custom.jsonl", Bytes("{\"body\": \"b1\"}\n{\"body\": \"b2\"}\n"));
        Assert.Equal(["b1", "b2"], ReadPlan(CorpusPlanner.Plan([custom], "body", null, 1, CancellationToken.None), "body").Select(r => r.Text));

        string missing = Write("missing-id.jsonl", Bytes("{\"id\": 1, \"text\": \"x\"}\n\n{\"text\": \"y\"}\n{\"id\": null, \"text\": \"z\"}\n"));
        var items = CorpusPlanner.Plan([missing], "text", "id", 1, CancellationToken.None);
        Assert.Single(CorpusReader.Read(items[0], "text", "id"));
        var e = Assert.Throws<UllmeException>(() => CorpusReader.Read(items[1], "text", "id"));
        Assert.Contains($"{missing}:3:", e.Message);
        Assert.Contains("\"id\"", e.Message);
        e = Assert.Throws<UllmeException>(() => CorpusReader.Read(items[2], "text", "id"));
        Assert.Contains($"{missing}:4:", e.Message);
        Assert.Contains("null", e.Message);

        string shortRow = Write("short.csv", Bytes("body,key\nx,k1\ny\n"));
        var s = CorpusPlanner.Plan([shortRow], "body", "key", 5, CancellationToken.None);
        e = Assert.Throws<UllmeException>(() => CorpusReader.Read(s[0], "body", "key"));
        Assert.Contains($"{shortRow}:3:", e.Message);
        Assert.Contains("'key'", e.Message);
    }

    [Fact]
    public void A_missing_column_is_an_error_naming_the_file_the_column_and_the_columns()
    {
        string csv = Write("cols.csv", Bytes("\uFEFFtitle,body\na,b\n"));
        var e = Assert.Throws<UllmeException>(() => CorpusPlanner.Plan([csv], "text", null, 10, CancellationToken.None));
        Assert.Contains(csv, e.Message);
        Assert.Contains("'text'", e.Message);
        Assert.Contains("title, body", e.Message);
        e = Assert.Throws<UllmeException>(() => CorpusPlanner.Plan([csv], "body", "id", 10, CancellationToken.None));
        Assert.Contains("'id'", e.Message);
        Assert.Contains(csv, e.Message);

        string tsv = Write("cols.tsv", Bytes("title\tbody\na\tb\n"));
        e = Assert.Throws<UllmeException>(() => CorpusPlanner.Plan([tsv], "content", null, 10, CancellationToken.None));
        Assert.Contains("'content'", e.Message);
        Assert.Contains("title, body", e.Message);

        string txt = Write("plain.txt", Bytes("a\n"));
        e = Assert.Throws<UllmeException>(() => CorpusPlanner.Plan([txt], "text", "id", 10, CancellationToken.None));
        Assert.Contains("'id'", e.Message);

        string jsonl = Write("body.jsonl", Bytes("{\"text\": \"a\"}\n"));
        var item = Assert.Single(CorpusPlanner.Plan([jsonl], "body", null, 10, CancellationToken.None));
        e = Assert.Throws<UllmeException>(() => CorpusReader.Read(item, "body", null));
        Assert.Contains($"{jsonl}:1:", e.Message);
        Assert.Contains("\"body\"", e.Message);
    }

    [Fact]
    public void A_jsonl_error_in_a_later_item_names_its_physical_line()
    {
        var sb = new StringBuilder("\r\n");
        for (int i = 1; i <= 10; i++)
        {
            sb.Append(i == 8 ? "{\"txt\": \"wrong field\"}\n" : $"{{\"text\": \"row {i}\"}}\n");
            if (i % 3 == 0) sb.Append("\n  \n");
        }
        string path = Write("errors.jsonl", Bytes(sb.ToString()));
        // line 1 is blank; rows 1..3 are lines 2..4; blank lines 5,6; rows 4..6 lines 7..9; blank 10,11; row 7 line 12, row 8 line 13
        var items = CorpusPlanner.Plan([path], "text", null, 3, CancellationToken.None);
        Assert.Equal([2L, 7, 12, 17], items.Select(i => i.StartLine));
        Assert.Equal(["row 1", "row 2", "row 3", "row 4", "row 5", "row 6"], items.Take(2).SelectMany(i => CorpusReader.Read(i, "text", null)).Select(r => r.Text));
        var e = Assert.Throws<UllmeException>(() => CorpusReader.Read(items[2], "text", null));
        Assert.StartsWith($"{path}:13: ", e.Message);
        Assert.Equal(["row 10"], CorpusReader.Read(items[3], "text", null).Select(r => r.Text));

        string broken = Write("broken.jsonl", Bytes("{\"text\": \"a\"}\n\n{\"text\": \"b\"}\n{\"text\": \"c\"\n"));
        items = CorpusPlanner.Plan([broken], "text", null, 2, CancellationToken.None);
        e = Assert.Throws<UllmeException>(() => CorpusReader.Read(items[1], "text", null));
        Assert.StartsWith($"{broken}:4: not valid JSON", e.Message);
    }

    [Fact]
    public void Csv_syntax_errors_are_found_while_planning_with_their_line()
    {
        string stray = Write("stray.csv", Bytes("text\nok\n\"a\nb\"\nab\"c\n"));
        var e = Assert.Throws<UllmeException>(() => CorpusPlanner.Plan([stray], "text", null, 10, CancellationToken.None));
        Assert.StartsWith($"{stray}:5: stray", e.Message);
        string open = Write("open.csv", Bytes("text\nok\n\"never closed\nmore\n"));
        e = Assert.Throws<UllmeException>(() => CorpusPlanner.Plan([open], "text", null, 10, CancellationToken.None));
        Assert.StartsWith($"{open}:3: unterminated", e.Message);
        string after = Write("after.csv", Bytes("text\n\"a\"b\n"));
        e = Assert.Throws<UllmeException>(() => CorpusPlanner.Plan([after], "text", null, 10, CancellationToken.None));
        Assert.StartsWith($"{after}:2: unexpected 'b'", e.Message);
    }

    [Fact]
    public void Empty_files_give_no_items_and_items_never_span_files()
    {
        string empty = Write("empty.txt", []);
        string headerOnly = Write("header.csv", Bytes("text\n\n"));
        string blank = Write("blank.jsonl", Bytes("\n  \n"));
        string a = Write("one/same.txt", Bytes("a1\na2\na3\n"));
        string b = Write("two/same.txt", Bytes("b1\nb2\n"));
        string c = Write("c.jsonl", Bytes("{\"text\": \"c1\"}\n"));
        var items = CorpusPlanner.Plan([empty, a, headerOnly, b, blank, c], "text", null, 2, CancellationToken.None);
        Assert.Equal([a, a, b, c], items.Select(i => i.File));
        Assert.Equal([0, 1, 2, 3], items.Select(i => i.Index));
        Assert.Equal([2, 1, 2, 1], items.Select(i => i.Rows));
        Assert.Equal([0L, 2, 0, 0], items.Select(i => i.StartRow));
        Assert.Equal([a, a, b, "c.jsonl"], items.Select(i => i.IdPrefix)); // the file name only where it is unique
        var rows = ReadPlan(items);
        Assert.Equal([$"{a}:1", $"{a}:2", $"{a}:3", $"{b}:1", $"{b}:2", "c.jsonl:1"], rows.Select(r => r.Id));
        Assert.Equal(["a1", "a2", "a3", "b1", "b2", "c1"], rows.Select(r => r.Text));
    }

    [Fact]
    public void A_file_that_shrank_since_planning_is_an_error()
    {
        string path = Write("shrinks.txt", Bytes("1\n2\n3\n4\n5\n"));
        var items = CorpusPlanner.Plan([path], "text", null, 3, CancellationToken.None);
        File.WriteAllBytes(path, Bytes("1\n2\n3\n4\n"));
        Assert.Equal(["1", "2", "3"], CorpusReader.Read(items[0], "text", null).Select(r => r.Text));
        var e = Assert.Throws<UllmeException>(() => CorpusReader.Read(items[1], "text", null));
        Assert.Contains(path, e.Message);
        Assert.Contains("changed", e.Message);
    }

    private async Task<string> WriteParquetAsync(string name, int[] groupSizes, Func<int, string?> text, bool withIds = true)
    {
        string path = Path.Combine(_dir, name);
        var textField = new DataField<string>("text");
        var idField = new DataField<long>("doc_id");
        var countField = new DataField<int>("count");
        var schema = withIds ? new ParquetSchema(idField, textField, countField) : new ParquetSchema(textField, countField);
        await using var stream = File.Create(path);
        await using var writer = await ParquetWriter.CreateAsync(schema, stream);
        int row = 0;
        foreach (int size in groupSizes)
        {
            using var group = writer.CreateRowGroup();
            var rows = Enumerable.Range(row, size).ToArray();
            if (withIds) await group.WriteAsync<long>(idField, rows.Select(r => 1000L + r).ToArray());
            await group.WriteAsync(textField, rows.Select(text).ToArray());
            await group.WriteAsync<int>(countField, rows);
            row += size;
        }
        return path;
    }

    [Fact]
    public async Task Parquet_items_read_every_row_once_in_order_across_row_groups()
    {
        int[] groups = [4, 5, 1, 3, 6];
        int total = groups.Sum();
        Func<int, string?> text = r => $"row {r} ünï \n {new string('x', r)}";
        string path = await WriteParquetAsync("input.parquet", groups, text);
        var expected = Enumerable.Range(0, total).Select(r => text(r)!).ToArray();
        foreach (int shardRows in new[] { 1, 2, 3, 4, 7, 100 })
        {
            var items = CorpusPlanner.Plan([path], "text", null, shardRows, CancellationToken.None);
            AssertItemsTile(items, shardRows, total);
            Assert.All(items, i => Assert.Equal((-1L, -1L), (i.ByteOffset, i.StartLine)));
            var rows = ReadPlan(items);
            Assert.Equal(expected, rows.Select(r => r.Text));
            Assert.Equal(Enumerable.Range(1, total).Select(i => $"input.parquet:{i}"), rows.Select(r => r.Id));
            var withIds = ReadPlan(CorpusPlanner.Plan([path], "text", "doc_id", shardRows, CancellationToken.None), "text", "doc_id");
            Assert.Equal(Enumerable.Range(0, total).Select(r => (1000 + r).ToString()), withIds.Select(r => r.Id));
        }
        // an item from the middle of group 0 to the middle of group 3 (rows 4..9 in groups 1, 2 and 3)
        var spanning = new WorkItem(0, path, 2, 9, -1, -1, "p");
        Assert.Equal(expected[2..11], CorpusReader.Read(spanning, "text", null).Select(r => r.Text));
        Assert.Equal(expected, CorpusReader.ReadAll(path, "text", null, "input.parquet").Select(r => r.Text));
    }

    [Fact]
    public async Task Parquet_columns_are_checked_and_a_null_text_names_the_row()
    {
        string path = await WriteParquetAsync("nulls.parquet", [3, 3, 3], r => r == 7 ? null : $"t{r}", withIds: false);
        var e = Assert.Throws<UllmeException>(() => CorpusPlanner.Plan([path], "body", null, 2, CancellationToken.None));
        Assert.Contains("'body'", e.Message);
        Assert.Contains(path, e.Message);
        Assert.Contains("text, count", e.Message);
        e = Assert.Throws<UllmeException>(() => CorpusPlanner.Plan([path], "count", null, 2, CancellationToken.None));
        Assert.Contains("'count'", e.Message);
        Assert.Contains("not strings", e.Message);
        e = Assert.Throws<UllmeException>(() => CorpusPlanner.Plan([path], "text", "doc_id", 2, CancellationToken.None));
        Assert.Contains("'doc_id'", e.Message);

        var items = CorpusPlanner.Plan([path], "TEXT", null, 2, CancellationToken.None);
        Assert.Equal(["t0", "t1", "t2", "t3", "t4", "t5"], items.Take(3).SelectMany(i => CorpusReader.Read(i, "TEXT", null)).Select(r => r.Text));
        e = Assert.Throws<UllmeException>(() => CorpusReader.Read(items[3], "TEXT", null));
        Assert.Contains(path, e.Message);
        Assert.Contains("row 8", e.Message);

        string notParquet = Write("fake.parquet", Bytes("not a parquet file at all"));
        e = Assert.Throws<UllmeException>(() => CorpusPlanner.Plan([notParquet], "text", null, 2, CancellationToken.None));
        Assert.Contains(notParquet, e.Message);
    }

    [Fact]
    public void ShardFile_round_trips_ids_floats_bit_for_bit_and_metadata()
    {
        const int rows = 1000, dim = 1024;
        var rng = new Random(42);
        var ids = Enumerable.Range(0, rows).Select(i => i == 5 ? "ünï,\"id\"\n" : $"file.jsonl:{i + 1}").ToArray();
        var vectors = Enumerable.Range(0, rows).Select(_ => Enumerable.Range(0, dim)
            .Select(_ => BitConverter.Int32BitsToSingle(rng.Next())).ToArray()).ToArray();
        vectors[0][0] = float.NaN;
        vectors[0][1] = -0f;
        vectors[0][2] = float.Epsilon;
        vectors[0][3] = float.NegativeInfinity;
        vectors[0][4] = float.MaxValue;
        string path = Path.Combine(_dir, "shard.parquet");
        ShardFile.Write(path, ids, vectors, new Dictionary<string, string> { ["ullme.model"] = "m", ["ullme.item"] = "7" });

        var (readIds, readVectors, metadata) = ShardFile.Read(path);
        Assert.Equal(ids, readIds);
        Assert.Equal(rows, readVectors.Length);
        for (int i = 0; i < rows; i++)
        {
            Assert.Equal(dim, readVectors[i].Length);
            Assert.True(MemoryMarshalBits(vectors[i]).SequenceEqual(MemoryMarshalBits(readVectors[i])), $"row {i} differs");
        }
        Assert.Equal("1024", metadata["ullme.dimension"]);
        Assert.Equal("m", metadata["ullme.model"]);
        Assert.Equal("7", metadata["ullme.item"]);

        string sha = ShardFile.Sha256(path);
        Assert.Matches("^[0-9a-f]{64}$", sha);
        Assert.Equal(Convert.ToHexStringLower(SHA256.HashData(File.ReadAllBytes(path))), sha);

        using var memory = new MemoryStream();
        ShardFile.Write(memory, ["a", "b"], [[1f, 2f], [3f, 4f]], null);
        string small = Path.Combine(_dir, "small.parquet");
        File.WriteAllBytes(small, memory.ToArray());
        var back = ShardFile.Read(small);
        Assert.Equal(["a", "b"], back.Ids);
        Assert.Equal([[1f, 2f], [3f, 4f]], back.Vectors);
        Assert.Equal("2", back.Metadata["ullme.dimension"]);
        Assert.NotEqual(sha, ShardFile.Sha256(small));
    }

    private static int[] MemoryMarshalBits(float[] v) => v.Select(BitConverter.SingleToInt32Bits).ToArray();

    [Fact]
    public void ShardFile_rejects_ragged_vectors_and_reads_only_shards()
    {
        string path = Path.Combine(_dir, "ragged.parquet");
        Assert.Throws<ArgumentException>(() => ShardFile.Write(path, ["a", "b"], [[1f, 2f], [3f]], null));
        Assert.Throws<ArgumentException>(() => ShardFile.Write(path, ["a"], [[1f], [2f]], null));
        string other = Path.Combine(_dir, "other.parquet");
        ParquetSerializerWrite(other);
        var e = Assert.Throws<UllmeException>(() => ShardFile.Read(other));
        Assert.Contains(other, e.Message);
    }

    private static void ParquetSerializerWrite(string path)
    {
        var field = new DataField<string>("text");
        using var stream = File.Create(path);
        Task.Run(async () =>
        {
            await using var writer = await ParquetWriter.CreateAsync(new ParquetSchema(field), stream);
            using var group = writer.CreateRowGroup();
            await group.WriteAsync(field, new[] { "x" });
        }).GetAwaiter().GetResult();
    }

    [Fact]
    public void Globs_expand_to_sorted_absolute_paths_in_pattern_order()
    {
        string a = Write("g/b.jsonl", Bytes("{}"));
        string b = Write("g/a.jsonl", Bytes("{}"));
        string c = Write("g/sub/c.csv", Bytes("text\n"));
        string d = Write("g/sub/deep/d.csv", Bytes("text\n"));
        string e1 = Write("g/sub/deep/e.tsv", Bytes("text\n"));
        string t = Write("g/x1.txt", Bytes("x"));
        string p = Write("g/sub/p.parquet", Bytes("x"));
        Write("g/readme.md", Bytes("x"));
        string g = Path.Combine(_dir, "g");

        Assert.Equal([b, a], CorpusFiles.Expand([Path.Combine(g, "*.jsonl")]));
        Assert.Equal([c, d], CorpusFiles.Expand([Path.Combine(g, "**", "*.csv")]));
        Assert.Equal([d, e1], CorpusFiles.Expand([Path.Combine(g, "s?b", "**", "deep", "*.?sv"), Path.Combine(g, "**", "deep", "*")]));
        Assert.Equal([t, b, a], CorpusFiles.Expand([t, Path.Combine(g, "*.jsonl"), Path.Combine(g, "*.txt")])); // each file once, where first named
        Assert.Equal([p, c], CorpusFiles.Expand([Path.Combine(g, "*", "*.parquet"), Path.Combine(g, "sub", "c.csv")]));
        Assert.Equal([Path.Combine(g, "sub", "c.csv")], CorpusFiles.Expand([Path.Combine(g, "sub", "..", "sub", "c.csv")]));

        var e = Assert.Throws<UllmeException>(() => CorpusFiles.Expand([Path.Combine(g, "*.xml")]));
        Assert.Contains("*.xml", e.Message);
        e = Assert.Throws<UllmeException>(() => CorpusFiles.Expand([Path.Combine(g, "nope.txt")]));
        Assert.Contains("nope.txt", e.Message);
        e = Assert.Throws<UllmeException>(() => CorpusFiles.Expand([Path.Combine(g, "*")]));
        Assert.Contains("readme.md", e.Message);
        e = Assert.Throws<UllmeException>(() => CorpusFiles.Expand([Path.Combine(g, "readme.md")]));
        Assert.Contains("readme.md", e.Message);
    }
}
