using System.Text.Json.Nodes;
using RetriKT.MLNet.Knowledge;
using RetriKT.MLNet.Tests.Infrastructure;

namespace RetriKT.MLNet.Tests.Knowledge;

public class KnowledgeStoreTests
{
    private static KnowledgeStore Sst2Store()
    {
        var rows = TestData.ReadSingleSentenceTsv(SharedData.Path("data", "SST-2", "k-shot", "16-13", "train.tsv"));
        return new KnowledgeStore(["0", "1"], rows.Select(r => KnowledgeEntry.Gold(r.Text, null, int.Parse(r.Label), 2)));
    }

    private static KnowledgeStore WithRandomEmbeddings(KnowledgeStore store, int dim, int seed = 3)
    {
        var rng = new Random(seed);
        var e = new float[store.Count * dim];
        for (int i = 0; i < e.Length; i++) e[i] = (float)(rng.NextDouble() * 2 - 1);
        return store.WithEmbeddings(e, dim);
    }

    [SharedDataFact]
    public void BinaryAndJsonlRoundTripsKeepEverything()
    {
        var store = WithRandomEmbeddings(Sst2Store(), 16);
        Assert.Equal(32, store.Count);
        Assert.Equal(1f, store.Embedding(5).ToArray().Sum(x => x * x), 4);

        using var folder = new TempDir("retrikt-store-");
        var dir = folder.Path;
        var path = Path.Combine(dir, "store.bin");
        store.Save(path);
        var loaded = KnowledgeStore.Load(path);
        Assert.Equal(store.LabelNames, loaded.LabelNames);
        Assert.Equal(store.Entries.Select(e => (e.Text, e.Label, e.Source)), loaded.Entries.Select(e => (e.Text, e.Label, e.Source)));
        Assert.Equal(store.Embeddings.ToArray(), loaded.Embeddings.ToArray());
        Assert.Equal(store.SoftLabels.ToArray(), loaded.SoftLabels.ToArray());
        Assert.Empty(Directory.GetFiles(dir, "*.tmp"));

        store.WithoutTexts().Save(path);
        var noTexts = KnowledgeStore.Load(path);
        Assert.False(noTexts.HasTexts);
        Assert.True(new FileInfo(path).Length < new FileInfo(Path.Combine(dir, "store.bin")).Length + 1);

        var jsonl = Path.Combine(dir, "store.jsonl");
        // Without texts (and JSONL holds no embeddings) no entry would keep its content, and the import refused the file.
        Assert.StartsWith($"ExportJsonl '{jsonl}': this store has no texts", Assert.Throws<InvalidOperationException>(() => noTexts.ExportJsonl(jsonl)).Message);
        Assert.False(File.Exists(jsonl));
        store.ExportJsonl(jsonl);
        var imported = KnowledgeStore.ImportJsonl(jsonl);
        Assert.Equal(store.Entries.Select(e => (e.Text, e.Label)), imported.Entries.Select(e => (e.Text, e.Label)));
        Assert.False(imported.HasEmbeddings);
    }

    [Fact]
    public void TruncatedTamperedAndOversizedFilesFailClearlyWithoutHugeAllocations()
    {
        var store = new KnowledgeStore(["neg", "pos"], Enumerable.Range(0, 50).Select(i => KnowledgeEntry.Gold($"text {i}", null, i % 2, 2)));
        store = WithRandomEmbeddings(store, 8);
        using var ms = new MemoryStream();
        store.Write(ms);
        var bytes = ms.ToArray();

        var truncated = Assert.Throws<InvalidDataException>(() => KnowledgeStore.Read(new MemoryStream(bytes[..(bytes.Length / 2)])));
        Assert.Contains("truncated", truncated.Message);

        var tampered = (byte[])bytes.Clone();
        tampered[bytes.Length - 40] ^= 0x55; // inside the embeddings
        Assert.Contains("checksum mismatch", Assert.Throws<InvalidDataException>(() => KnowledgeStore.Read(new MemoryStream(tampered))).Message);

        var huge = (byte[])bytes.Clone();
        BitConverter.GetBytes(int.MaxValue).CopyTo(huge, 16); // entry count
        var before = GC.GetAllocatedBytesForCurrentThread();
        var e = Assert.Throws<InvalidDataException>(() => KnowledgeStore.Read(new MemoryStream(huge), new StoreReadLimits { MaxEntries = int.MaxValue }));
        Assert.True(GC.GetAllocatedBytesForCurrentThread() - before < 1 << 20, "a tampered count must not allocate");
        Assert.Contains("bytes remain", e.Message);

        var foreign = Assert.Throws<InvalidDataException>(() => KnowledgeStore.Read(new MemoryStream("PK\u0003\u0004 not a store"u8.ToArray())));
        Assert.Contains("not a knowledge store", foreign.Message);
    }

    [Fact]
    public void InvalidEntriesAreRejectedNamingTheEntry()
    {
        Assert.Contains("Entry 1: soft label has 3 values, expected 2", Assert.Throws<ArgumentException>(() =>
            new KnowledgeStore(["a", "b"], [KnowledgeEntry.Gold("x", null, 0, 2), new KnowledgeEntry("y", null, 1, [0.2f, 0.3f, 0.5f], 1, KnowledgeSource.Generated)])).Message);
        Assert.Contains("sums to", Assert.Throws<ArgumentException>(() =>
            new KnowledgeStore(["a", "b"], [new KnowledgeEntry("y", null, 1, [0.2f, 0.3f], 1, KnowledgeSource.Generated)])).Message);
        var store = new KnowledgeStore(["a", "b"], [KnowledgeEntry.Gold("x", null, 0, 2), KnowledgeEntry.Gold("y", null, 1, 2)]);
        Assert.Contains("Entry 1", Assert.Throws<ArgumentException>(() => store.WithEmbeddings([1, 0, float.NaN, 1], 2)).Message);
        Assert.Contains("expected 2 × 3", Assert.Throws<ArgumentException>(() => store.WithEmbeddings([1, 0, 1, 1], 3)).Message);
        Assert.Throws<ArgumentOutOfRangeException>(() => KnowledgeEntry.Gold("x", null, 2, 2));
    }

    [Fact]
    public void HandWrittenJsonlThatIsWrongFailsNamingTheFileLineAndField()
    {
        using var folder = new TempDir();
        var path = folder.File("store.jsonl");
        string Refused(params string[] lines)
        {
            File.WriteAllLines(path, ["{\"retrikt_store\": 1, \"labels\": [\"neg\", \"pos\"]}", "{\"text\": \"fine\", \"label\": \"pos\"}", .. lines]);
            return Assert.Throws<InvalidDataException>(() => KnowledgeStore.ImportJsonl(path)).Message;
        }
        Assert.Equal($"{path} line 3: field 'label' must be a string, found Number 1.", Refused("{\"text\": \"bad\", \"label\": 1}"));
        Assert.Equal($"{path} line 3: field 'text' must be a string, found Number 7.", Refused("{\"text\": 7, \"label\": \"neg\"}"));
        Assert.Equal($"{path} line 3: expected a JSON object, found Array.", Refused("[\"bad\", \"neg\"]"));
        Assert.Equal($"{path} line 3: field 'soft_label' must hold numbers, found String \"0.5\".",
            Refused("{\"text\": \"bad\", \"label\": \"neg\", \"soft_label\": [\"0.5\", 0.5]}"));
        Assert.Equal($"{path} line 4: soft label sums to 1.1, expected 1.",
            Refused("{\"text\": \"ok\", \"label\": \"neg\"}", "{\"text\": \"bad\", \"label\": \"neg\", \"soft_label\": [0.6, 0.5]}"));
        Assert.Equal($"{path} line 3: source 'Teacher' is not one of [FewShot, Generated, Imported, Variant, Unlabeled].",
            Refused("{\"text\": \"bad\", \"label\": \"neg\", \"source\": \"Teacher\"}"));
        // A number or a list is no source's name; Enum.TryParse read "4" as Unlabeled and "Generated, Imported" as Variant (1 | 2).
        Assert.Equal($"{path} line 3: source '4' is not one of [FewShot, Generated, Imported, Variant, Unlabeled].",
            Refused("{\"text\": \"bad\", \"label\": \"neg\", \"source\": \"4\"}"));
        Assert.Equal($"{path} line 3: source 'Generated, Imported' is not one of [FewShot, Generated, Imported, Variant, Unlabeled].",
            Refused("{\"text\": \"bad\", \"label\": \"neg\", \"source\": \"Generated, Imported\"}"));
        // A name in any case reads as the store view's Source column reads it.
        File.WriteAllLines(path, ["{\"retrikt_store\": 1, \"labels\": [\"neg\", \"pos\"]}", "{\"text\": \"fine\", \"label\": \"pos\", \"source\": \"generated\"}"]);
        Assert.Equal(KnowledgeSource.Generated, Assert.Single(KnowledgeStore.ImportJsonl(path).Entries).Source);
        File.WriteAllLines(path, ["{\"retrikt_store\": 1, \"labels\": \"neg,pos\"}"]);
        Assert.Equal($"{path} line 1: the header's 'labels' must be an array of strings, found \"neg,pos\".",
            Assert.Throws<InvalidDataException>(() => KnowledgeStore.ImportJsonl(path)).Message);
    }

    [Fact]
    public void JsonlSoftLabelsAreReadInTheOrderOfTheFilesHeaderWhateverOrderTheStoreUses()
    {
        using var folder = new TempDir();
        var path = folder.File("store.jsonl");
        new KnowledgeStore(["neg", "pos"],
        [
            new KnowledgeEntry("a dull film", null, 0, [0.9f, 0.1f], 0.9f, KnowledgeSource.Generated),
            new KnowledgeEntry("a fine film", null, 1, [0.2f, 0.8f], 0.8f, KnowledgeSource.Generated),
        ]).ExportJsonl(path);

        // The caller's label order: each soft label is moved into it, so p(neg) stays 0.9 for the dull film.
        var reordered = KnowledgeStore.ImportJsonl(path, ["pos", "neg"]);
        Assert.Equal(["pos", "neg"], reordered.LabelNames);
        Assert.Equal(1, reordered.Entries[0].Label);
        Assert.Equal([0.1f, 0.9f], reordered.Entries[0].SoftLabel);
        Assert.Equal([0.8f, 0.2f], reordered.Entries[1].SoftLabel);

        // Two exports of different label orders, concatenated: the second header governs the lines after it.
        var other = folder.File("other.jsonl");
        new KnowledgeStore(["pos", "neg"], [new KnowledgeEntry("a great film", null, 0, [0.7f, 0.3f], 0.7f, KnowledgeSource.Generated)]).ExportJsonl(other);
        var both = folder.File("both.jsonl");
        File.WriteAllLines(both, File.ReadLines(path).Concat(File.ReadLines(other)));
        var merged = KnowledgeStore.ImportJsonl(both);
        Assert.Equal(["neg", "pos"], merged.LabelNames);
        Assert.Equal(1, merged.Entries[2].Label);
        Assert.Equal([0.3f, 0.7f], merged.Entries[2].SoftLabel);

        // Labels that are not the same set cannot be mapped: the header line is named.
        Assert.Equal($"{path} line 1: the header's labels [neg, pos] are not the label names given [negative, positive] (the same names are needed, in any order).",
            Assert.Throws<InvalidDataException>(() => KnowledgeStore.ImportJsonl(path, ["negative", "positive"])).Message);
    }

    /// <summary>
    /// A file without a header (a user's own; every export has one) is read in the order of the names given. Given in
    /// another order than the file's, every soft label was kept unmoved, so each entry carried the other label's
    /// probabilities and a student trained on it learned the labels swapped. The lines' own labels show such an order.
    /// </summary>
    [SharedDataFact]
    public void AHeaderlessJsonlReadInAnotherOrderThanItsOwnFailsNamingALine()
    {
        using var folder = new TempDir();
        var path = folder.File("store.jsonl");
        var fewShot = Sst2Store();
        fewShot.ExportJsonl(path);
        File.WriteAllLines(path, File.ReadAllLines(path)[1..]); // the header gone: soft_label values in the order [0, 1]
        Assert.Equal(fewShot.Entries, KnowledgeStore.ImportJsonl(path, ["0", "1"]).Entries);
        var firstLabel = JsonNode.Parse(File.ReadLines(path).First())!["label"]!.GetValue<string>();
        Assert.Equal($"{path}: no header line gives the order of the soft_label values, and read in the order of the label names given [1, 0] 32 of the 32 " +
                     $"FewShot lines (gold labels, one-hot soft labels) give another label than theirs the highest probability (the first: line 1, label " +
                     $"'{firstLabel}', soft_label [{(firstLabel == "0" ? "1, 0" : "0, 1")}]); the values are in another order than " +
                     "these names. Give the names in the file's order, or start the file with a header line {\"retrikt_store\":1,\"labels\":[...]} in that order.",
            Assert.Throws<InvalidDataException>(() => KnowledgeStore.ImportJsonl(path, ["1", "0"])).Message);

        // Generated lines at the teacher's fidelity: each label's lines rank the other label first when read swapped.
        var rows = TestData.ReadSingleSentenceTsv(SharedData.Path("data", "SST-2", "k-shot", "16-13", "train.tsv"));
        File.WriteAllLines(path, rows.Select(r => new JsonObject
        {
            ["text"] = r.Text, ["label"] = r.Label == "0" ? "negative" : "positive",
            ["soft_label"] = r.Label == "0" ? new JsonArray(0.8f, 0.2f) : new JsonArray(0.3f, 0.7f), ["source"] = "Generated",
        }.ToJsonString()));
        Assert.Equal([0.8f, 0.2f], KnowledgeStore.ImportJsonl(path, ["negative", "positive"]).Entries.First(e => e.Label == 0).SoftLabel);
        var swapped = Assert.Throws<InvalidDataException>(() => KnowledgeStore.ImportJsonl(path, ["positive", "negative"])).Message;
        int firstPositive = rows.FindIndex(r => r.Label == "1") + 1;
        Assert.Equal($"{path}: no header line gives the order of the soft_label values, and read in the order of the label names given [positive, negative] " +
                     $"16 of the 16 lines labelled 'positive' give label 'negative' the highest probability (the first: line {firstPositive}, soft_label [0.3, 0.7]); " +
                     "the values are in another order than these names. Give the names in the file's order, or start the file with a header line " +
                     "{\"retrikt_store\":1,\"labels\":[...]} in that order.", swapped);
        // With a header the same lines are moved into the names' order, as before.
        File.WriteAllLines(path, [new JsonObject { ["retrikt_store"] = 1, ["labels"] = new JsonArray("negative", "positive") }.ToJsonString(), .. File.ReadAllLines(path)]);
        var moved = KnowledgeStore.ImportJsonl(path, ["positive", "negative"]);
        Assert.Equal([0.7f, 0.3f], moved.Entries[firstPositive - 1].SoftLabel);
    }

    /// <summary>
    /// A hand-written single-text file may carry <c>"text2": ""</c>. Kept as an empty second text, each entry was embedded
    /// as a pair ([CLS] text [SEP] [SEP], the second segment's token type) that no one-text query is, so a query of the
    /// very same text found it below cosine 1 (0.990 with the tiny BERT), and the store changed on a round trip through
    /// its data view, which reads an empty Text2 as none.
    /// </summary>
    [SharedDataFact]
    public void AnEmptyText2InJsonlIsNoSecondText()
    {
        using var folder = new TempDir();
        var path = folder.File("store.jsonl");
        File.WriteAllLines(path, ["{\"text\": \"a fine film\", \"text2\": \"\", \"label\": \"pos\"}", "{\"text\": \"a dull film\", \"text2\": \"\", \"label\": \"neg\"}"]);
        var store = KnowledgeStore.ImportJsonl(path, ["neg", "pos"]);
        Assert.All(store.Entries, e => Assert.Null(e.Text2));
        var encoder = RetriKT.MLNet.Encoders.ManagedBertSentenceEncoder.Load(SharedData.Path("models", "hf-tiny-random-bert"));
        var query = encoder.Embed(["a fine film"])[0];
        var stored = store.WithEmbeddings(encoder).Embedding(0).ToArray();
        Assert.Equal(1f, stored.Zip(query, (a, b) => a * b).Sum(), 5);
    }

    [Fact]
    public void AFailedSaveOrExportLeavesNoTempFileAndNamesTheMissingFolder()
    {
        using var folder = new TempDir();
        var store = new KnowledgeStore(["neg", "pos"], [KnowledgeEntry.Gold("x", null, 0, 2), KnowledgeEntry.Gold("y", null, 1, 2)]);
        var taken = folder.File("taken");
        Directory.CreateDirectory(taken);
        // ExportJsonl wrote 'taken.tmp' and left it there when the rename failed.
        Assert.ThrowsAny<IOException>(() => store.ExportJsonl(taken));
        Assert.ThrowsAny<IOException>(() => store.Save(taken));
        Assert.Equal([taken], Directory.GetFileSystemEntries(folder.Path));

        // The message named the temp file ('.../missing/s.bin.8bcc1d0a.tmp'), not the file asked for.
        var missing = Path.Combine(folder.Path, "missing", "s.bin");
        Assert.Equal($"Cannot write '{missing}': the folder '{Path.GetDirectoryName(missing)}' does not exist.",
            Assert.Throws<DirectoryNotFoundException>(() => store.Save(missing)).Message);
        Assert.Equal($"Cannot write '{missing}.jsonl': the folder '{Path.GetDirectoryName(missing)}' does not exist.",
            Assert.Throws<DirectoryNotFoundException>(() => store.ExportJsonl(missing + ".jsonl")).Message);
    }

    [Fact]
    public void AStoreFileWithBytesAfterItsChecksumFailsToLoad()
    {
        using var folder = new TempDir();
        var path = folder.File("store.bin");
        new KnowledgeStore(["neg", "pos"], [KnowledgeEntry.Gold("x", null, 0, 2), KnowledgeEntry.Gold("y", null, 1, 2)]).Save(path);
        Assert.Equal(2, KnowledgeStore.Load(path).Count);
        using (var append = new FileStream(path, FileMode.Append)) append.Write([1, 2, 3, 4]);
        var e = Assert.Throws<InvalidDataException>(() => KnowledgeStore.Load(path));
        Assert.Equal($"{path}: 4 bytes follow the store's checksum; a store file holds one store and nothing after it.", e.Message);
    }

    /// <summary>
    /// A foreign file given as a store (a model.zip, any binary file) is named in one printable line: its first bytes are
    /// shown escaped, never as the raw control bytes (NULs) that ended up in logs and terminals.
    /// </summary>
    [Fact]
    public void AForeignBinaryFileIsReportedWithItsFirstBytesEscaped()
    {
        using var folder = new TempDir();
        var path = folder.File("model.zip");
        File.WriteAllBytes(path, [0x50, 0x4B, 0x03, 0x04, 0x14, 0x00, 0x00, 0x00, 0x08, 0x00, 0x5C, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00]);
        var e = Assert.Throws<InvalidDataException>(() => KnowledgeStore.Load(path));
        Assert.Equal($"{path}: not a knowledge store (magic 'PK\\x03\\x04\\x14\\x00\\x00\\x00', expected 'RKTSTORE').", e.Message);
        Assert.DoesNotContain(e.Message, char.IsControl);
    }
}
