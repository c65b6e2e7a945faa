using RetriKT.MLNet.Knowledge;
using RetriKT.MLNet.Tests.Infrastructure;
using RetriKT.MLNet.Text;

namespace RetriKT.MLNet.Tests.Knowledge;

/// <summary>The term-match index over real SST-2 sentences, checked against a brute-force TF-IDF cosine.</summary>
public class LexicalIndexTests
{
    private static (WordPieceVocabulary Vocabulary, List<int[]> Entries, List<string> Texts) Sst2()
    {
        var texts = TestData.ReadSingleSentenceTsv(SharedData.Path("data", "SST-2", "dev.tsv")).Take(300).Select(r => r.Text).ToList();
        var vocabulary = WordPieceVocabulary.Build(texts, maxSize: 600, minFrequency: 1);
        // As the student tokenizes: [CLS] ids [SEP]; the special tokens must not count as terms.
        var entries = texts.Select(t => new[] { vocabulary.ClsId }.Concat(vocabulary.Encode(t)).Append(vocabulary.SepId).ToArray()).ToList();
        return (vocabulary, entries, texts);
    }

    private static Func<int, bool> Terms(WordPieceVocabulary v)
        => t => t != v.PadId && t != v.UnknownId && t != v.ClsId && t != v.SepId && t != v.MaskId;

    /// <summary>The definition, written out densely: tf·idf with idf = ln((1+N)/(1+df)), L2-normalised, cosine.</summary>
    private static float[] BruteForceScores(List<int[]> entries, int[] query, int terms, Func<int, bool> isTerm)
    {
        int n = entries.Count;
        var df = new int[terms];
        foreach (var e in entries) foreach (int t in e.Distinct()) if (isTerm(t)) df[t]++;
        double[] Vector(int[] ids)
        {
            var v = new double[terms];
            foreach (int t in ids) if (isTerm(t) && df[t] > 0) v[t] += Math.Log((1.0 + n) / (1.0 + df[t]));
            double norm = Math.Sqrt(v.Sum(x => x * x));
            return norm > 0 ? v.Select(x => x / norm).ToArray() : v;
        }
        var q = Vector(query);
        return entries.Select(e => { var v = Vector(e); return (float)Enumerable.Range(0, terms).Sum(t => q[t] * v[t]); }).ToArray();
    }

    [SharedDataFact]
    public void SearchReturnsTheTopEntriesByTfIdfCosineAsWrittenOutBruteForce()
    {
        var (vocabulary, entries, texts) = Sst2();
        var index = LexicalIndex.Build(entries, vocabulary.Count, Terms(vocabulary));
        Assert.Equal(entries.Count, index.Count);
        foreach (int row in new[] { 0, 17, 123, 299 })
        {
            var query = entries[row];
            var expected = BruteForceScores(entries, query, vocabulary.Count, Terms(vocabulary));
            var order = Enumerable.Range(0, entries.Count).Where(i => expected[i] > 0)
                .OrderByDescending(i => expected[i]).ThenBy(i => i).Take(10).ToArray();
            var ids = new int[10];
            var scores = new float[10];
            int found = index.Search(query, 10, ids, scores);
            Assert.Equal(order.Length, found);
            Assert.Equal(row, ids[0]); // a sentence is its own best match
            Assert.Equal(1f, scores[0], 4);
            for (int j = 0; j < found; j++)
            {
                Assert.Equal(expected[order[j]], scores[j], 4);
                Assert.True(Math.Abs(expected[ids[j]] - scores[j]) < 1e-4, $"'{texts[row]}': result {j} is entry {ids[j]} with {scores[j]}, brute force gives {expected[ids[j]]}");
            }
        }
    }

    [SharedDataFact]
    public void SpecialAndUnknownTokensMatchNothingAndWordsOutsideTheStoreFindNothing()
    {
        var (vocabulary, entries, _) = Sst2();
        var index = LexicalIndex.Build(entries, vocabulary.Count, Terms(vocabulary));
        var ids = new int[5];
        var scores = new float[5];
        Assert.Equal(0, index.Search([vocabulary.ClsId, vocabulary.UnknownId, vocabulary.UnknownId, vocabulary.SepId], 5, ids, scores));
        Assert.Equal(0, index.Search([], 5, ids, scores));
        Assert.Throws<ArgumentException>(() => LexicalIndex.Build([[vocabulary.Count]], vocabulary.Count, _ => true));
    }

    /// <summary>
    /// A query's distinct terms were found by scanning the terms seen so far at every token: quadratic in the query's
    /// length (≈ 192 ms at 100,000 tokens). A long query with repeats scores as its terms counted by hand (each term's
    /// repeats moved next to its first occurrence), bit for bit, and as the scan scored it: the distinct terms keep the
    /// order they first occur in, which is the order every entry's score is summed in.
    /// </summary>
    [SharedDataFact]
    public void ALongQueryWithRepeatsScoresAsItsTermsCountedByHandInTheOrderTheyFirstOccur()
    {
        var (vocabulary, entries, _) = Sst2();
        var index = LexicalIndex.Build(entries, vocabulary.Count, Terms(vocabulary));
        var query = entries.SelectMany(e => e).ToArray(); // the 300 sentences as one query: thousands of tokens, most of them repeats
        var counts = query.GroupBy(t => t).ToDictionary(g => g.Key, g => g.Count());
        var byHand = query.Distinct().SelectMany(t => Enumerable.Repeat(t, counts[t])).ToArray();
        const int k = 12;
        (int[] Ids, float[] Scores) Search(int[] ids)
        {
            var (found, scores) = (new int[k], new float[k]);
            Assert.Equal(k, index.Search(ids, k, found, scores));
            return (found, scores);
        }
        var (ids, scores) = Search(query);
        var (handIds, handScores) = Search(byHand);
        Assert.Equal(handIds, ids);
        Assert.Equal(handScores, scores);
        // The top entries with their scores' bits, as the scan found them before the search was made linear.
        Assert.Equal("36:3f089be9 294:3effa886 192:3efc4d4e 41:3efa5069 59:3ef7ddd5 79:3ef5dd20 200:3eef1044 214:3eedf51a 31:3ee969c5 39:3ee8e6e6 119:3ee8dab3 215:3ee512ba",
            string.Join(" ", ids.Zip(scores, (i, s) => $"{i}:{BitConverter.SingleToInt32Bits(s):x8}")));
    }

    [SharedDataFact]
    public void ARoundTripKeepsEveryResultAndADamagedOrForeignIndexFailsWithOneClearLine()
    {
        var (vocabulary, entries, _) = Sst2();
        var index = LexicalIndex.Build(entries, vocabulary.Count, Terms(vocabulary));
        using var buffer = new MemoryStream();
        using (var writer = new BinaryWriter(buffer, System.Text.Encoding.UTF8, leaveOpen: true)) index.Write(writer);
        byte[] bytes = buffer.ToArray();
        LexicalIndex Read(byte[] b, int count, int terms)
        {
            using var reader = new BinaryReader(new MemoryStream(b));
            return LexicalIndex.Read(reader, count, terms, "model.zip Lexical.bin");
        }
        var copy = Read(bytes, entries.Count, vocabulary.Count);
        for (int row = 0; row < entries.Count; row += 37)
        {
            var (a, b) = (new int[8], new int[8]);
            var (sa, sb) = (new float[8], new float[8]);
            Assert.Equal(index.Search(entries[row], 8, a, sa), copy.Search(entries[row], 8, b, sb));
            Assert.Equal(a, b);
            Assert.Equal(sa, sb);
        }

        var foreign = Assert.Throws<InvalidDataException>(() => Read(bytes, entries.Count + 1, vocabulary.Count));
        Assert.Equal($"model.zip Lexical.bin: the term index covers {entries.Count} entries, the store holds {entries.Count + 1}.", foreign.Message);
        var damaged = (byte[])bytes.Clone();
        // The last posting weight becomes NaN.
        BitConverter.GetBytes(float.NaN).CopyTo(damaged, damaged.Length - 4);
        var e = Assert.Throws<InvalidDataException>(() => Read(damaged, entries.Count, vocabulary.Count));
        Assert.StartsWith("model.zip Lexical.bin: posting ", e.Message);
        Assert.Contains("expected [0, 1]", e.Message);
        Assert.ThrowsAny<EndOfStreamException>(() => Read(bytes[..^3], entries.Count, vocabulary.Count));
    }
}
