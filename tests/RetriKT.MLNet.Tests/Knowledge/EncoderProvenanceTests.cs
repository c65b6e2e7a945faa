using System.IO.Compression;
using Microsoft.ML;
using Microsoft.ML.Data;
using RetriKT.MLNet.Encoders;
using RetriKT.MLNet.Knowledge;
using RetriKT.MLNet.Student;
using RetriKT.MLNet.Tests.Infrastructure;
using RetriKT.MLNet.Tests.Student;

namespace RetriKT.MLNet.Tests.Knowledge;

/// <summary>A store records the encoder of its embeddings, and the retriever refuses queries from another one.</summary>
public class EncoderProvenanceTests
{
    private static readonly string[] Texts =
    [
        "a gorgeous, witty and moving film", "the plot is dull and the acting is worse", "an instant classic",
        "two hours I will never get back", "warm, funny and beautifully shot", "a tedious mess",
    ];

    private sealed class QueryRow
    {
        [VectorType(384)]
        public float[] Features { get; set; } = [];
    }

    private sealed class FakeEncoder(string? fingerprint) : IStoreEncoder
    {
        public int Dimension => 2;
        public void Encode(IReadOnlyList<(string Text, string? Text2)> texts, Span<float> destination)
        {
            for (int i = 0; i < texts.Count; i++) { destination[2 * i] = 1; destination[2 * i + 1] = texts[i].Text.Length; }
        }
        public string? Fingerprint => fingerprint;
    }

    private sealed class DefaultEncoder : IStoreEncoder
    {
        public int Dimension => 2;
        public void Encode(IReadOnlyList<(string Text, string? Text2)> texts, Span<float> destination) => destination.Fill(1);
    }

    private static KnowledgeStore Store(IReadOnlyList<string>? labels = null)
        => new(labels ?? ["neg", "pos"], Texts.Select((t, i) => KnowledgeEntry.Gold(t, null, 1 - i % 2, 2)));

    /// <summary>Queries as a view whose column carries <paramref name="fingerprint"/> as its annotation (none when null).</summary>
    private static IDataView Queries(MLContext ml, float[][] vectors, string? fingerprint)
    {
        var schema = SchemaDefinition.Create(typeof(QueryRow));
        if (fingerprint is not null) EncoderProvenance.Annotate(schema[nameof(QueryRow.Features)], fingerprint);
        return ml.Data.LoadFromEnumerable(vectors.Select(v => new QueryRow { Features = v }), schema);
    }

    [Fact]
    public void TheStoreRecordsItsEncodersFingerprintAndKeepsItThroughSaveAndLoad()
    {
        var store = Store().WithEmbeddings(new FakeEncoder("enc-1"));
        Assert.Equal("enc-1", store.EncoderFingerprint);
        Assert.Equal("enc-1", store.WithoutTexts().EncoderFingerprint);
        Assert.Null(store.WithoutEmbeddings().EncoderFingerprint);
        Assert.Null(Store().WithEmbeddings(new DefaultEncoder()).EncoderFingerprint); // IStoreEncoder's default: unknown
        Assert.Null(Store().WithEmbeddings(store.Embeddings.ToArray(), 2).EncoderFingerprint);
        Assert.Equal("enc-2", Store().WithEmbeddings(store.Embeddings.ToArray(), 2, "enc-2").EncoderFingerprint);
        Assert.Equal("An encoder fingerprint ('enc-1') needs embeddings; this store has none.", Assert.Throws<ArgumentException>(() => Store().WithEncoderFingerprint("enc-1")).Message);
        Assert.Contains("without white space", Assert.Throws<ArgumentException>(() => Store().WithEmbeddings(store.Embeddings.ToArray(), 2, "enc 1")).Message);

        using var withFingerprint = new MemoryStream();
        store.Write(withFingerprint);
        Assert.Equal(2, BitConverter.ToInt32(withFingerprint.ToArray(), 8));
        withFingerprint.Position = 0;
        var loaded = KnowledgeStore.Read(withFingerprint);
        Assert.Equal("enc-1", loaded.EncoderFingerprint);
        Assert.Equal(store.Entries, loaded.Entries);
        Assert.Equal(store.Embeddings.ToArray(), loaded.Embeddings.ToArray());

        // Without a fingerprint the store is written as version 1, as before, which earlier versions of the library read.
        using var without = new MemoryStream();
        store.WithoutEmbeddings().Write(without);
        Assert.Equal(1, BitConverter.ToInt32(without.ToArray(), 8));
    }

    /// <summary>Fixtures/student-v10001.zip holds a Store.bin written in format version 1 by the code of commit ce2875c.</summary>
    [Fact]
    public void AStoreFileOfFormatVersion1LoadsWithAnUnknownEncoderAndItsStudentClaimsIt()
    {
        var model = Path.Combine(AppContext.BaseDirectory, "Student", "Fixtures", "student-v10001.zip");
        using var folder = new TempDir("retrikt-provenance-");
        var path = folder.File("store-v1.bin");
        using (var zip = ZipFile.OpenRead(model))
            zip.Entries.Single(e => e.FullName.EndsWith("Store.bin", StringComparison.Ordinal)).ExtractToFile(path);
        Assert.Equal(1, BitConverter.ToInt32(File.ReadAllBytes(path), 8));
        var old = KnowledgeStore.Load(path);
        Assert.Null(old.EncoderFingerprint);
        Assert.Equal(40, old.Count);
        Assert.True(old.HasEmbeddings);

        // The student that saved it embedded it: loaded, the store carries the student's fingerprint.
        using var student = (RetrievalClassifierTransformer)new MLContext(seed: 1).Model.Load(model, out _);
        Assert.Equal(student.Fingerprint, student.Store.EncoderFingerprint);
        Assert.Equal(old.Embeddings.ToArray(), student.Store.Embeddings.ToArray());
    }

    [Fact]
    public void TheRetrieverRefusesQueriesFromAnotherEncoderOfTheSameDimension()
    {
        var miniLM = ManagedBertSentenceEncoder.Load(PretrainedEncoderPackage.MiniLM);
        var arctic = ManagedBertSentenceEncoder.Load(PretrainedEncoderPackage.ArcticXs);
        Assert.Equal(miniLM.Dimension, arctic.Dimension);
        Assert.Matches("^[0-9a-f]{32}$", miniLM.Fingerprint);
        Assert.NotEqual(miniLM.Fingerprint, arctic.Fingerprint);
        Assert.Equal(miniLM.Fingerprint, ManagedBertSentenceEncoder.Load(PretrainedEncoderPackage.MiniLM).Fingerprint);
        Assert.NotEqual(miniLM.Fingerprint, ManagedBertSentenceEncoder.Load(PretrainedEncoderPackage.MiniLM, new() { MaxTokens = 128 }).Fingerprint);
        // The TorchSharp encoder gives the same embeddings from the same package, so it has the same fingerprint.
        var ml = new MLContext(seed: 1);
        using (var torch = BertSentenceEncoder.Load(ml, PretrainedEncoderPackage.MiniLM)) Assert.Equal(miniLM.Fingerprint, torch.Fingerprint);

        var store = Store().WithEmbeddings(miniLM);
        Assert.Equal(miniLM.Fingerprint, store.EncoderFingerprint);
        var fromArctic = Queries(ml, arctic.Embed(Texts), arctic.Fingerprint);
        var error = Assert.Throws<ArgumentException>(() => ml.RetriKT().KnowledgeRetriever(store, k: 2).Fit(fromArctic));
        Assert.Equal($"The 'EncoderFingerprint' annotation of column 'Features' says the query embeddings come from encoder {arctic.Fingerprint}, " +
                     $"but the knowledge store's embeddings come from encoder {miniLM.Fingerprint}: retrieval across two encoders finds unrelated neighbours. " +
                     "Embed the store with the query encoder (store.WithEmbeddings(encoder)) or the queries with the store's encoder.", error.Message);

        // The same encoder on both sides: each text finds itself.
        var fromMiniLM = Queries(ml, miniLM.Embed(Texts), miniLM.Fingerprint);
        var retriever = ml.RetriKT().KnowledgeRetriever(store, k: 2).Fit(fromMiniLM);
        var ids = retriever.Transform(fromMiniLM).GetColumn<VBuffer<int>>("NeighborIds").Select(v => v.GetValues()[0]).ToArray();
        Assert.Equal(Enumerable.Range(0, Texts.Length), ids);

        // Unknown on either side: no check (queries without the annotation; a store embedded from plain numbers).
        ml.RetriKT().KnowledgeRetriever(store, k: 2).Fit(Queries(ml, arctic.Embed(Texts), null));
        ml.RetriKT().KnowledgeRetriever(Store().WithEmbeddings(store.Embeddings.ToArray(), 384), k: 2).Fit(fromArctic);

        // Stated in the options instead of the column.
        var stated = Assert.Throws<ArgumentException>(() => ml.RetriKT().KnowledgeRetriever(store,
            new KnowledgeRetrieverEstimator.Options { K = 2, QueryEncoderFingerprint = arctic.Fingerprint }).Fit(Queries(ml, arctic.Embed(Texts), null)));
        Assert.StartsWith($"Options.QueryEncoderFingerprint says the query embeddings come from encoder {arctic.Fingerprint}, but", stated.Message);

        // A fitted (and a saved and loaded) retriever checks every schema it maps.
        Assert.Throws<ArgumentException>(() => retriever.GetOutputSchema(fromArctic.Schema));
        using var buffer = new MemoryStream();
        ml.Model.Save(retriever, fromMiniLM.Schema, buffer);
        buffer.Position = 0;
        var loaded = (KnowledgeRetrieverTransformer)ml.Model.Load(buffer, out _);
        Assert.Equal(miniLM.Fingerprint, loaded.Store.EncoderFingerprint);
        Assert.Contains(arctic.Fingerprint, Assert.Throws<ArgumentException>(() => loaded.Transform(fromArctic)).Message);
        Assert.Equal(ids, loaded.Transform(fromMiniLM).GetColumn<VBuffer<int>>("NeighborIds").Select(v => v.GetValues()[0]));
    }

    private sealed class TextRow
    {
        public string Text { get; set; } = "";
    }

    [Fact]
    public void TheSentenceEmbeddingStepAnnotatesItsQueriesSoAPipelineRefusesAStoreOfAnotherEncoderAndSavesTheEncoder()
    {
        var ml = new MLContext(seed: 1);
        var miniLM = ManagedBertSentenceEncoder.Load(PretrainedEncoderPackage.MiniLM);
        var arctic = ManagedBertSentenceEncoder.Load(PretrainedEncoderPackage.ArcticXs);
        var texts = ml.Data.LoadFromEnumerable(Texts.Select(t => new TextRow { Text = t }));

        var embedding = ml.RetriKT().SentenceEmbedding(miniLM);
        var keyedByArctic = Store().WithEmbeddings(arctic);
        var error = Assert.Throws<ArgumentException>(() => embedding.Append(ml.RetriKT().KnowledgeRetriever(keyedByArctic, k: 2)).Fit(texts));
        Assert.StartsWith($"The 'EncoderFingerprint' annotation of column 'Features' says the query embeddings come from encoder {miniLM.Fingerprint}, " +
                          $"but the knowledge store's embeddings come from encoder {arctic.Fingerprint}", error.Message);

        // The store's own encoder: the step gives what the encoder gives, and each text finds itself.
        var model = embedding.Append(ml.RetriKT().KnowledgeRetriever(Store().WithEmbeddings(miniLM), k: 2)).Fit(texts);
        var scored = model.Transform(texts);
        var features = scored.GetColumn<float[]>("Features").ToArray();
        var expected = miniLM.Embed(Texts);
        for (int i = 0; i < Texts.Length; i++) Assert.Equal(expected[i], features[i]);
        var ids = scored.GetColumn<VBuffer<int>>("NeighborIds").Select(v => v.GetValues()[0]).ToArray();
        Assert.Equal(Enumerable.Range(0, Texts.Length), ids);

        // model.zip holds the encoder: loaded, the same embeddings and neighbours, and the same fingerprint on the column.
        using var folder = new TempDir("retrikt-provenance-");
        var path = folder.File("model.zip");
        ml.Model.Save(model, texts.Schema, path);
        var loaded = ml.Model.Load(path, out _);
        var again = loaded.Transform(texts);
        Assert.Equal(features, again.GetColumn<float[]>("Features").ToArray());
        Assert.Equal(ids, again.GetColumn<VBuffer<int>>("NeighborIds").Select(v => v.GetValues()[0]));
        Assert.Equal(miniLM.Fingerprint, EncoderProvenance.Of(again.Schema["Features"]));
        var step = ((TransformerChain<ITransformer>)loaded).OfType<SentenceEmbeddingTransformer>().Single();
        Assert.Equal(miniLM.Fingerprint, step.Encoder.Fingerprint);
        Assert.Equal((miniLM.MaxTokens, miniLM.Pooling, miniLM.Normalize), (step.Encoder.MaxTokens, step.Encoder.Pooling, step.Encoder.Normalize));

        // A missing text column is named.
        var noText = ml.Data.LoadFromEnumerable(Texts.Select(t => new TextRow2 { Body = t }));
        Assert.Contains("'Text'", Assert.ThrowsAny<ArgumentException>(() => embedding.Fit(noText)).Message);
    }

    private sealed class TextRow2
    {
        public string Body { get; set; } = "";
    }

    [Fact]
    public void StudentsOfTwoSeedsAreTwoEncodersAndEachKeepsItsFingerprintThroughSaveAndLoad()
    {
        RetrievalClassifierTransformer Train(int seed)
        {
            var ml = new MLContext(seed: seed);
            var data = ml.Data.LoadFromEnumerable(RetrievalClassifierBehaviourTests.Synthetic(40, 1));
            var keyed = ml.Transforms.Conversion.MapValueToKey("Label").Fit(data).Transform(data);
            return ml.MulticlassClassification.Trainers.RetrievalClassifier(new RetrievalClassifierTrainer.Options
            {
                HiddenSize = 16, Layers = 1, Heads = 2, MaxLength = 16, Epochs = 3, BatchSize = 8,
            }).Fit(keyed);
        }
        using var first = Train(1);
        using var second = Train(2);
        Assert.Equal(first.Fingerprint, first.Store.EncoderFingerprint);
        Assert.NotEqual(first.Fingerprint, second.Fingerprint);
        Assert.Equal(first.Fingerprint, first.WithRetrievalWeight(0).Fingerprint);

        var ml = new MLContext(seed: 1);
        using var buffer = new MemoryStream();
        ml.Model.Save(first, null, buffer);
        buffer.Position = 0;
        using var loaded = (RetrievalClassifierTransformer)ml.Model.Load(buffer, out _);
        Assert.Equal(first.Fingerprint, loaded.Fingerprint);
        Assert.Equal(first.Fingerprint, loaded.Store.EncoderFingerprint);

        // A store the first student embedded, searched with the second student's queries, is refused; with its own, not.
        var store = Store().WithEmbeddings(first);
        Assert.Equal(first.Fingerprint, store.EncoderFingerprint);
        var grown = first.WithAddedKnowledge(Store(first.LabelNames));
        Assert.Equal(first.Fingerprint, grown.Store.EncoderFingerprint);
        float[][] Embed(RetrievalClassifierTransformer student)
        {
            var flat = new float[Texts.Length * student.Dimension];
            student.Encode(Texts.Select(t => (t, (string?)null)).ToList(), flat);
            return flat.Chunk(student.Dimension).ToArray();
        }
        IDataView Queries(RetrievalClassifierTransformer student)
        {
            var schema = SchemaDefinition.Create(typeof(SmallQueryRow));
            schema[nameof(SmallQueryRow.Features)].ColumnType = new VectorDataViewType(NumberDataViewType.Single, student.Dimension);
            EncoderProvenance.Annotate(schema[nameof(SmallQueryRow.Features)], student.Fingerprint);
            return ml.Data.LoadFromEnumerable(Embed(student).Select(v => new SmallQueryRow { Features = v }), schema);
        }
        var error = Assert.Throws<ArgumentException>(() => ml.RetriKT().KnowledgeRetriever(store, k: 1).Fit(Queries(second)));
        Assert.Contains($"encoder {second.Fingerprint}, but the knowledge store's embeddings come from encoder {first.Fingerprint}", error.Message);
        ml.RetriKT().KnowledgeRetriever(store, k: 1).Fit(Queries(first));
    }

    private sealed class SmallQueryRow
    {
        public float[] Features { get; set; } = [];
    }
}
