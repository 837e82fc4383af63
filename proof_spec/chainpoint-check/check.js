// For each Chainpoint proof file given: validate with chainpoint-proof-json-schema, then parse
// with chainpoint-parse and print {file, valid, errors, anchors: [{anchor_id, expected_value}]} as JSON.
'use strict'
const fs = require('fs')
const schema = require('chainpoint-proof-json-schema')
const cp = require('chainpoint-parse')

function anchorsOf (branches, out) {
  for (const b of branches || []) {
    for (const a of b.anchors || []) out.push({ type: a.type, anchor_id: a.anchor_id, expected_value: a.expected_value })
    anchorsOf(b.branches, out)
  }
  return out
}

const results = process.argv.slice(2).map((file) => {
  const proof = JSON.parse(fs.readFileSync(file, 'utf8'))
  const v = schema.validate(proof)
  if (!v.valid) return { file, valid: false, errors: v.errors }
  try {
    const parsed = cp.parse(proof)
    return { file, valid: true, anchors: anchorsOf(parsed.branches, []) }
  } catch (e) {
    return { file, valid: false, errors: [String(e.message || e)] }
  }
})
process.stdout.write(JSON.stringify(results) + '\n')
