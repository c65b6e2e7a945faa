using System.Globalization;
using Microsoft.ML;
using Microsoft.ML.Data;
using RetriKT.MLNet.Encoders;
using RetriKT.MLNet.Tests.Infrastructure;
using RetriKT.Samples.Data;

namespace RetriKT.MLNet.Tests.Encoders;

/// <summary>
/// A text pair that does not fit MaxTokens is cut longest-first as Hugging Face's fast (Rust) tokenizers cut it, which
/// sentence-transformers loads: where both texts are longer than half the room, the first keeps half of it rounded
/// down and the second the rest, unless the first is the longer, which then keeps the larger half (their
/// <c>truncate_encodings</c>). BERT's reference (<c>_truncate_seq_pair</c>, HF's slow tokenizers), which this library
/// followed before 2026-12-07, gives the larger half to the first text always; a model.zip saved before keeps that cut.
/// </summary>
public class PairTruncationTests
{
    private static readonly Lazy<ManagedBertSentenceEncoder> MiniLM = new(() => ManagedBertSentenceEncoder.Load(PretrainedEncoderPackage.MiniLM));

    /// <summary>MiniLM as loaded from its package, with another MaxTokens (its parts are read once for every case).</summary>
    private static ManagedBertSentenceEncoder MiniLMWith(int maxTokens) => ManagedBertSentenceEncoder.FromParts(MiniLM.Value.Parts, normalize: true, maxTokens);

    /// <summary>[CLS] "cat" × <paramref name="keptFirst"/> [SEP] "dog" × <paramref name="keptSecond"/> [SEP]: each word is one MiniLM token.</summary>
    private static int[] CatsAndDogs(Text.WordPieceVocabulary v, int keptFirst, int keptSecond)
        => [v.ClsId, .. Enumerable.Repeat(v.Encode("cat").Single(), keptFirst), v.SepId, .. Enumerable.Repeat(v.Encode("dog").Single(), keptSecond), v.SepId];

    private static string Words(string word, int count) => string.Join(" ", Enumerable.Repeat(word, count));

    // Hugging Face's own table (tokenizers/src/utils/truncation.rs, truncate_encodings_longest_first: max_length 7, texts
    // of 0, 2, 4 and 8 tokens), then room 9 with texts past what is read of them (room + 1 tokens), where only their full
    // lengths say which is the longer, and an even room, where the two halves are equal.
    [SharedDataTheory]
    [InlineData(7, 0, 0, 0, 0)] [InlineData(7, 0, 2, 0, 2)] [InlineData(7, 0, 4, 0, 4)] [InlineData(7, 0, 8, 0, 7)]
    [InlineData(7, 2, 0, 2, 0)] [InlineData(7, 2, 2, 2, 2)] [InlineData(7, 2, 4, 2, 4)] [InlineData(7, 2, 8, 2, 5)]
    [InlineData(7, 4, 0, 4, 0)] [InlineData(7, 4, 2, 4, 2)] [InlineData(7, 4, 4, 3, 4)] [InlineData(7, 4, 8, 3, 4)]
    [InlineData(7, 8, 0, 7, 0)] [InlineData(7, 8, 2, 5, 2)] [InlineData(7, 8, 4, 4, 3)] [InlineData(7, 8, 8, 3, 4)]
    [InlineData(9, 10, 10, 4, 5)] [InlineData(9, 11, 10, 5, 4)] [InlineData(9, 10, 11, 4, 5)]
    [InlineData(9, 30, 20, 5, 4)] [InlineData(9, 20, 30, 4, 5)] [InlineData(9, 30, 30, 4, 5)]
    [InlineData(10, 10, 10, 5, 5)] [InlineData(10, 6, 8, 5, 5)] [InlineData(10, 3, 30, 3, 7)]
    public void PairsAreCutAsHuggingFacesFastTokenizerCutsThem(int room, int first, int second, int keptFirst, int keptSecond)
    {
        var encoder = MiniLMWith(room + 3);
        Assert.Equal(CatsAndDogs(encoder.Vocabulary, keptFirst, keptSecond), encoder.Tokenize(Words("cat", first), Words("dog", second)));
    }

    [SharedDataFact]
    public void TheTorchSharpEncoderCutsPairsAsTheManagedOne()
    {
        using var encoder = BertSentenceEncoder.Load(new MLContext(seed: 1), PretrainedEncoderPackage.MiniLM, new BertSentenceEncoder.Options { MaxTokens = 12 });
        Assert.Equal(CatsAndDogs(encoder.Vocabulary, 4, 5), encoder.Tokenize(Words("cat", 20), Words("dog", 30)));
    }

    /// <summary>
    /// Hugging Face's rule as its source states it (the shorter text n1, the longer n2; a tie keeps the order), over real
    /// RTE and MRPC pairs, whose words are often several pieces: what is kept of each text follows from the full lengths
    /// of both, however far the tokenizer reads them.
    /// </summary>
    [SharedDataFact]
    public void RealPairsKeepWhatHuggingFacesRuleKeepsOfTheirFullLengths()
    {
        var v = MiniLM.Value.Vocabulary;
        var pairs = new[] { "RTE", "MRPC" }.SelectMany(t => FewShotBenchmarks.Load(SharedData.Path("data"), t, 13).Test.Take(150))
            .Select(r => (r.Text, r.Text2)).ToList();
        int cut = 0, firstLongerThanRead = 0;
        foreach (int room in new[] { 13, 14, 21 })
        {
            var encoder = MiniLMWith(room + 3);
            foreach (var (a, b) in pairs)
            {
                List<int> idsA = v.Encode(a), idsB = v.Encode(b);
                var (keepA, keepB) = HuggingFaceLongestFirst(idsA.Count, idsB.Count, room);
                Assert.Equal([v.ClsId, .. idsA.Take(keepA), v.SepId, .. idsB.Take(keepB), v.SepId], encoder.Tokenize(a, b));
                if (idsA.Count + idsB.Count > room) cut++;
                if (idsA.Count > room + 1 && idsB.Count > room + 1) firstLongerThanRead++;
            }
        }
        Assert.True(cut > 300 && firstLongerThanRead > 100, $"{cut} pairs cut, {firstLongerThanRead} with both texts longer than what is read");
    }

    private static (int First, int Second) HuggingFaceLongestFirst(int first, int second, int room)
    {
        if (first + second <= room) return (first, second);
        bool swap = first > second;
        int n1 = Math.Min(first, second), n2 = Math.Max(first, second);
        n2 = n1 > room ? n1 : Math.Max(n1, room - n1);
        if (n1 + n2 > room) (n1, n2) = (room / 2, room / 2 + room % 2);
        return swap ? (n2, n1) : (n1, n2);
    }

    /// <summary>A single text keeps its first MaxTokens − 2 pieces, as before: the pair rule does not touch it (SST-2 rows are single texts).</summary>
    [SharedDataFact]
    public void SingleTextsKeepTheirFirstPieces()
    {
        var v = MiniLM.Value.Vocabulary;
        var texts = FewShotBenchmarks.Load(SharedData.Path("data"), "SST-2", 13).Test.Take(200).Select(r => r.Text).ToList();
        foreach (int maxTokens in new[] { 3, 8, 17, 256 })
        {
            var encoder = MiniLMWith(maxTokens);
            foreach (var text in texts)
                Assert.Equal([v.ClsId, .. v.Encode(text).Take(maxTokens - 2), v.SepId], encoder.Tokenize(text));
        }
    }

    /// <summary>
    /// BERT's reference cut, one token at a time from the longer text and from the second on a tie, as this library did it
    /// before 2026-12-07: what a saved model that restores <see cref="PairTruncation.SecondOnTie"/> keeps doing, for every
    /// pair of lengths.
    /// </summary>
    [SharedDataFact]
    public void AnEncoderThatRestoresTheReferenceCutCutsEveryPairAsBefore()
    {
        var reference = MiniLM.Value.Parts with { Truncation = PairTruncation.SecondOnTie };
        for (int maxTokens = 3; maxTokens <= 16; maxTokens++)
        {
            var encoder = ManagedBertSentenceEncoder.FromParts(reference, normalize: true, maxTokens);
            int room = maxTokens - 3;
            for (int first = 0; first <= 14; first++)
                for (int second = 0; second <= 14; second++)
                {
                    int keptFirst = first, keptSecond = second;
                    while (keptFirst + keptSecond > room)
                        if (keptFirst > keptSecond) keptFirst--; else keptSecond--;
                    Assert.Equal(CatsAndDogs(encoder.Vocabulary, keptFirst, keptSecond), encoder.Tokenize(Words("cat", first), Words("dog", second)));
                }
        }
    }

    private sealed class PairRow
    {
        public string Text { get; set; } = "";
        public string Text2 { get; set; } = "";
    }

    /// <summary>
    /// A SentenceEmbedding saved before Hugging Face's cut (format 0x00010002, written by commit 600b6d1 with MaxTokens 24
    /// over the tiny BERT of sentence-embedding-v10001.zip; Encoders/Fixtures/README.md) keeps the reference cut, its
    /// embeddings and its fingerprint, so a store it keyed is still its store. The same parts read now cut as Hugging Face
    /// and fingerprint apart: pairs the two cuts cut alike embed alike, the others not.
    /// </summary>
    [Fact]
    public void ASentenceEmbeddingSavedBeforeKeepsItsCutEmbeddingsAndFingerprint_ANewOneCutsAsHuggingFace()
    {
        var ml = new MLContext(seed: 1);
        string fixtures = Path.Combine(AppContext.BaseDirectory, "Encoders", "Fixtures");
        var recorded = File.ReadAllLines(Path.Combine(fixtures, "sentence-embedding-v10002.tsv")).Select(l => l.Split('\t'))
            .Select(p => (Text: p[0], Text2: p[1], Values: p[2].Split(' ').Select(v => float.Parse(v, CultureInfo.InvariantCulture)).ToArray())).ToList();
        List<float[]> Embed(ITransformer model) => model.Transform(ml.Data.LoadFromEnumerable(recorded.Select(r => new PairRow { Text = r.Text, Text2 = r.Text2 })))
            .GetColumn<float[]>("Features").ToList();

        var old = (SentenceEmbeddingTransformer)ml.Model.Load(Path.Combine(fixtures, "sentence-embedding-v10002.zip"), out _);
        Assert.Equal((PairSegments.SecondTextOne, PairTruncation.SecondOnTie), (old.Encoder.Parts.Segments, old.Encoder.Parts.Truncation));
        Assert.Equal("8a33ff8675b9b4ec1a0128a74a85c520", old.Encoder.Fingerprint);
        var embedded = Embed(old);
        for (int i = 0; i < recorded.Count; i++)
            Assert.True(recorded[i].Values.SequenceEqual(embedded[i]), $"pair {i}: the saved model no longer gives the embedding it was saved with");

        using var temp = new TempDir("retrikt-pair-truncation-");
        var resaved = Path.Combine(temp.Path, "model.zip");
        ml.Model.Save(old, null, resaved);
        var reloaded = (SentenceEmbeddingTransformer)ml.Model.Load(resaved, out _);
        Assert.Equal(PairTruncation.SecondOnTie, reloaded.Encoder.Parts.Truncation);
        Assert.Equal(old.Encoder.Fingerprint, reloaded.Encoder.Fingerprint);
        Assert.True(Embed(reloaded).Zip(recorded).All(p => p.First.SequenceEqual(p.Second.Values)));

        var current = new SentenceEmbeddingTransformer(ml, ManagedBertSentenceEncoder.FromParts(old.Encoder.Parts with { Truncation = PairTruncation.HuggingFaceFast },
            old.Encoder.Normalize, old.Encoder.MaxTokens), "Features", "Text", "Text2");
        Assert.NotEqual(old.Encoder.Fingerprint, current.Encoder.Fingerprint);
        var now = Embed(current);
        int cutApart = 0;
        for (int i = 0; i < recorded.Count; i++)
        {
            bool cutAlike = old.Encoder.Tokenize(recorded[i].Text, recorded[i].Text2).SequenceEqual(current.Encoder.Tokenize(recorded[i].Text, recorded[i].Text2));
            if (!cutAlike) cutApart++;
            Assert.True(cutAlike == recorded[i].Values.SequenceEqual(now[i]), $"pair {i}: cut {(cutAlike ? "alike" : "apart")}, embedded {(cutAlike ? "apart" : "alike")}");
        }
        Assert.Equal(3, cutApart); // the pairs whose first text is not the longer (MRPC pairs 0, 2 and 3 of the fixture)
        var currentPath = Path.Combine(temp.Path, "current.zip");
        ml.Model.Save(current, null, currentPath);
        var currentLoaded = (SentenceEmbeddingTransformer)ml.Model.Load(currentPath, out _);
        Assert.Equal(PairTruncation.HuggingFaceFast, currentLoaded.Encoder.Parts.Truncation);
        Assert.Equal(current.Encoder.Fingerprint, currentLoaded.Encoder.Fingerprint);
        Assert.True(Embed(currentLoaded).Zip(now).All(p => p.First.SequenceEqual(p.Second)));
    }
}
